// The fused element-wise kernels (fused_elementwise.cuh) as libtorch autograd functions:
// bias + dropout + residual + LayerNorm, and bias + erf GELU. The kernels are compiled by
// NVRTC and loaded by the Rust side (model::fused_elementwise), which hands over the
// driver's cuLaunchKernel and the eight kernel handles; this file only sizes the launches,
// allocates through libtorch (its caching allocator) and saves what the backward needs.
// Launches go to the legacy default stream, the stream libtorch runs its own kernels on
// here (the trainer never changes the current stream), so they are ordered with them.

#include <torch/csrc/autograd/custom_function.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

namespace {

using LaunchFn = int (*)(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                         unsigned by, unsigned bz, unsigned shared, void* stream,
                         void** params, void** extra);

enum Kernel { kLnForward, kLnBackward, kGeluForward, kGeluBackward, kKernels };

struct Registry {
  LaunchFn launch = nullptr;
  // [storage][kernel]: storage 0 f32, 1 bf16, in model::fused_elementwise::KERNELS' order.
  void* functions[2][kKernels] = {};
};

Registry registry;

int storage_index(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat) return 0;
  if (t.scalar_type() == at::kBFloat16) return 1;
  throw std::invalid_argument(std::string("fused kernels take float32 or bfloat16, not ") +
                              c10::toString(t.scalar_type()));
}

void launch(int storage, Kernel k, unsigned gx, unsigned gy, unsigned block, void** params) {
  if (!registry.launch) throw std::runtime_error("the fused kernels are not loaded");
  int code = registry.launch(registry.functions[storage][k], gx, gy, 1, block, 1, 1, 0,
                             nullptr, params, nullptr);
  if (code != 0) {
    throw std::runtime_error("cuLaunchKernel failed with CUDA error " + std::to_string(code));
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(what);
}

constexpr unsigned kBlock = 256;             // 8 warps: 8 rows of LayerNorm per block
constexpr uint64_t kMaxLnWarps = 1024;       // the backward's partial sums: warps x 3 x H
constexpr uint64_t kMaxBlocks = 8192;        // grid-stride beyond this
constexpr uint64_t kGeluRowChunks = 64;      // the GELU backward's partial sums: chunks x cols

uint64_t blocks_for(uint64_t items, uint64_t per_block) {
  return std::max<uint64_t>(1, std::min(kMaxBlocks, (items + per_block - 1) / per_block));
}

// y = LayerNorm(residual + dropout(x + bias)). x, residual [rows, H] contiguous, one
// storage type; bias, gamma, beta float32 [H].
struct BiasDropoutResidualLayerNorm
    : public torch::autograd::Function<BiasDropoutResidualLayerNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor x,
                            at::Tensor bias, at::Tensor residual, at::Tensor gamma,
                            at::Tensor beta, double p, int64_t key, double eps) {
    const int storage = storage_index(x);
    require(residual.scalar_type() == x.scalar_type(), "x and residual differ in dtype");
    require(x.sizes() == residual.sizes(), "x and residual differ in shape");
    require(x.is_contiguous() && residual.is_contiguous(), "x and residual must be contiguous");
    const int64_t H = x.size(-1);
    for (const at::Tensor* t : {&bias, &gamma, &beta}) {
      require(t->scalar_type() == at::kFloat && t->numel() == H && t->is_contiguous(),
              "bias, gamma and beta must be contiguous float32 [H]");
    }
    const uint64_t rows = x.numel() / H;
    auto y = at::empty_like(x);
    auto s = at::empty_like(x);
    auto mean = at::empty({(int64_t)rows}, x.options().dtype(at::kFloat));
    auto rstd = at::empty({(int64_t)rows}, x.options().dtype(at::kFloat));
    const uint64_t threshold = keep_threshold(p);
    const float scale = p > 0 ? (float)(1.0 / (1.0 - p)) : 1.0f;
    const float feps = (float)eps;
    const int h = (int)H;
    uint64_t ukey = (uint64_t)key, urows = rows;
    void* xp = x.data_ptr();
    void* bp = bias.data_ptr();
    void* rp = residual.data_ptr();
    void* gp = gamma.data_ptr();
    void* bep = beta.data_ptr();
    void* yp = y.data_ptr();
    void* sp = s.data_ptr();
    void* mp = mean.data_ptr();
    void* rsp = rstd.data_ptr();
    void* params[] = {&xp, &bp, &rp, &gp, &bep, &yp, &sp, &mp, &rsp,
                      &urows, (void*)&h, &ukey, (void*)&threshold, (void*)&scale,
                      (void*)&feps};
    launch(storage, kLnForward, (unsigned)blocks_for(rows, kBlock / 32), 1, kBlock, params);
    ctx->save_for_backward({s, mean, rstd, gamma});
    ctx->saved_data["p"] = p;
    ctx->saved_data["key"] = key;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &s = saved[0], &mean = saved[1], &rstd = saved[2], &gamma = saved[3];
    const double p = ctx->saved_data["p"].toDouble();
    uint64_t key = (uint64_t)ctx->saved_data["key"].toInt();
    at::Tensor dy = grads[0].to(s.scalar_type()).contiguous();
    const int storage = storage_index(s);
    const int h = (int)s.size(-1);
    uint64_t rows = s.numel() / h;
    // One warp per row up to kMaxLnWarps, each warp's column sums in `partial`.
    const uint64_t blocks = (std::min(kMaxLnWarps, std::max<uint64_t>(rows, 1)) + 7) / 8;
    const uint64_t warps = blocks * (kBlock / 32);
    auto d_residual = at::empty_like(s);
    auto dx = at::empty_like(s);
    auto partial = at::empty({(int64_t)warps, 3, (int64_t)h}, s.options().dtype(at::kFloat));
    uint64_t threshold = keep_threshold(p);
    float scale = p > 0 ? (float)(1.0 / (1.0 - p)) : 1.0f;
    void* dyp = dy.data_ptr();
    void* sp = s.data_ptr();
    void* mp = mean.data_ptr();
    void* rsp = rstd.data_ptr();
    void* gp = gamma.data_ptr();
    void* drp = d_residual.data_ptr();
    void* dxp = dx.data_ptr();
    void* pp = partial.data_ptr();
    int hh = h;
    void* params[] = {&dyp, &sp, &mp, &rsp, &gp, &drp, &dxp, &pp,
                      &rows, &hh, &key, &threshold, &scale};
    launch(storage, kLnBackward, (unsigned)blocks, 1, kBlock, params);
    auto sums = partial.sum(0);  // [3, H]: dgamma, dbeta, dbias
    return {dx, sums[2], d_residual, sums[0], sums[1], at::Tensor(), at::Tensor(),
            at::Tensor()};
  }

  static uint64_t keep_threshold(double p) {
    return (uint64_t)std::llround((1.0 - p) * 4294967296.0);
  }
};

// y = gelu(z + bias), erf form. z [rows, cols] contiguous; bias float32 [cols].
struct BiasGelu : public torch::autograd::Function<BiasGelu> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor z,
                            at::Tensor bias) {
    const int storage = storage_index(z);
    require(z.is_contiguous(), "z must be contiguous");
    const int64_t cols = z.size(-1);
    require(bias.scalar_type() == at::kFloat && bias.numel() == cols && bias.is_contiguous(),
            "bias must be contiguous float32 [cols]");
    uint64_t rows = z.numel() / cols;
    int c = (int)cols;
    auto y = at::empty_like(z);
    void* zp = z.data_ptr();
    void* bp = bias.data_ptr();
    void* yp = y.data_ptr();
    void* params[] = {&zp, &bp, &yp, &rows, &c};
    launch(storage, kGeluForward, (unsigned)blocks_for(rows * cols, kBlock), 1, kBlock, params);
    ctx->save_for_backward({z, bias});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &z = saved[0], &bias = saved[1];
    at::Tensor dy = grads[0].to(z.scalar_type()).contiguous();
    const int storage = storage_index(z);
    int cols = (int)z.size(-1);
    uint64_t rows = z.numel() / cols;
    const uint64_t chunks = std::max<uint64_t>(1, std::min(kGeluRowChunks, rows));
    auto dz = at::empty_like(z);
    auto partial = at::empty({(int64_t)chunks, (int64_t)cols}, z.options().dtype(at::kFloat));
    void* dyp = dy.data_ptr();
    void* zp = z.data_ptr();
    void* bp = bias.data_ptr();
    void* dzp = dz.data_ptr();
    void* pp = partial.data_ptr();
    void* params[] = {&dyp, &zp, &bp, &dzp, &pp, &rows, &cols};
    launch(storage, kGeluBackward, (unsigned)((cols + kBlock - 1) / kBlock), (unsigned)chunks,
           kBlock, params);
    return {dz, partial.sum(0)};
  }
};

template <typename F>
at::Tensor* guarded(F f, char** message) {
  try {
    *message = nullptr;
    return new at::Tensor(f());
  } catch (const std::exception& e) {
    *message = strdup(e.what());
    return nullptr;
  }
}

}  // namespace

extern "C" {

// The driver's cuLaunchKernel and the kernels, in model::fused_elementwise::KERNELS' order
// (f32's four, then bf16's).
void biobert_fused_register(void* launch_fn, void* const* functions) {
  registry.launch = reinterpret_cast<LaunchFn>(launch_fn);
  for (int i = 0; i < 2 * kKernels; ++i) registry.functions[i / kKernels][i % kKernels] = functions[i];
}

// New tensor handles (at::Tensor*, as tch's own), or null with `*message` set (freed by
// biobert_free_message).
at::Tensor* biobert_fused_layer_norm(const at::Tensor* x, const at::Tensor* bias,
                                     const at::Tensor* residual, const at::Tensor* gamma,
                                     const at::Tensor* beta, double p, int64_t key,
                                     double eps, char** message) {
  return guarded(
      [&] {
        return BiasDropoutResidualLayerNorm::apply(*x, *bias, *residual, *gamma, *beta, p,
                                                   key, eps);
      },
      message);
}

at::Tensor* biobert_fused_bias_gelu(const at::Tensor* z, const at::Tensor* bias,
                                    char** message) {
  return guarded([&] { return BiasGelu::apply(*z, *bias); }, message);
}

}  // extern "C"
