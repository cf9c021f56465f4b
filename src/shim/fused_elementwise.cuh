// The fused element-wise kernels of a BERT layer, Megatron's and MLPerf's largest
// eager-mode win: bias + dropout + residual + LayerNorm (forward and backward), and the
// erf GELU with its bias (forward, and backward with the bias gradient). BERT's GELU is
// the erf form; cuBLASLt's GELU epilogue is the tanh approximation, so it is not used.
//
// One header, compiled twice: by NVRTC at run time for the GPU (the kernels under
// __CUDACC_RTC__ at the end), and by the host compiler (fused_elementwise_host.cpp) for
// the tests, which check every device function below against libtorch's unfused
// operations. Only the kernels' thread layout (one warp per row, shuffles for the row
// sums) is device-only.
//
// Dropout keeps element `i` of a call when word i % 4 of Philox4x32-10 at counter
// (i / 4, 0, 0, 0) under the call's 64-bit key is below keep * 2^32: the mask is a pure
// function of (key, element), so the backward recomputes it instead of storing it, and
// the host derives each call's key from the run's keyed streams.

#ifdef __CUDACC_RTC__
#define BIOBERT_HD __device__ __forceinline__
typedef unsigned int b_u32;
typedef unsigned short b_u16;
typedef unsigned long long b_u64;
#else
#include <math.h>

#include <cstdint>
#include <cstring>
#define BIOBERT_HD inline
typedef uint32_t b_u32;
typedef uint16_t b_u16;
typedef uint64_t b_u64;
#endif

namespace biobert_fused {

#ifdef __CUDACC_RTC__
BIOBERT_HD float bits_to_float(b_u32 b) { return __uint_as_float(b); }
BIOBERT_HD b_u32 float_to_bits(float f) { return __float_as_uint(f); }
#else
inline float bits_to_float(b_u32 b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
inline b_u32 float_to_bits(float f) {
  b_u32 b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}
#endif

// bf16 <-> f32 as libtorch rounds (to nearest, ties to even; NaN stays NaN).
BIOBERT_HD float bf16_to_float(b_u16 h) { return bits_to_float((b_u32)h << 16); }

BIOBERT_HD b_u16 float_to_bf16(float f) {
  b_u32 bits = float_to_bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (b_u16)(bits >> 16);
}

// Storage of a tensor element: f32 or bf16 (as its 16 bits).
BIOBERT_HD float load(const float* p, b_u64 i) { return p[i]; }
BIOBERT_HD float load(const b_u16* p, b_u64 i) { return bf16_to_float(p[i]); }
BIOBERT_HD void store(float* p, b_u64 i, float v) { p[i] = v; }
BIOBERT_HD void store(b_u16* p, b_u64 i, float v) { p[i] = float_to_bf16(v); }
// A value as its storage holds it.
BIOBERT_HD float stored(const float*, float v) { return v; }
BIOBERT_HD float stored(const b_u16*, float v) { return bf16_to_float(float_to_bf16(v)); }

// Philox4x32-10 (Salmon et al., 2011), the generator of cuRAND and libtorch's CUDA dropout.
BIOBERT_HD void philox4x32_10(b_u32 ctr[4], b_u32 key0, b_u32 key1) {
  const b_u32 m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    b_u64 p0 = (b_u64)m0 * ctr[0];
    b_u64 p1 = (b_u64)m1 * ctr[2];
    b_u32 hi0 = (b_u32)(p0 >> 32), lo0 = (b_u32)p0;
    b_u32 hi1 = (b_u32)(p1 >> 32), lo1 = (b_u32)p1;
    b_u32 next[4] = {hi1 ^ ctr[1] ^ key0, lo1, hi0 ^ ctr[3] ^ key1, lo0};
    ctr[0] = next[0];
    ctr[1] = next[1];
    ctr[2] = next[2];
    ctr[3] = next[3];
    key0 += w0;
    key1 += w1;
  }
}

// The 32 random bits of element `i` under `key`.
BIOBERT_HD b_u32 random_bits(b_u64 key, b_u64 i) {
  b_u64 block = i >> 2;
  b_u32 ctr[4] = {(b_u32)block, (b_u32)(block >> 32), 0u, 0u};
  philox4x32_10(ctr, (b_u32)key, (b_u32)(key >> 32));
  // Selected, not indexed: a run-time index would put the words in local memory.
  const b_u32 word = (b_u32)(i & 3);
  return word == 0 ? ctr[0] : word == 1 ? ctr[1] : word == 2 ? ctr[2] : ctr[3];
}

// Whether dropout keeps element `i`: `threshold` is keep * 2^32, 2^32 (no dropout) keeps all.
BIOBERT_HD bool keeps(b_u64 key, b_u64 i, b_u64 threshold) {
  return threshold > 0xffffffffull || (b_u64)random_bits(key, i) < threshold;
}

// The sum LayerNorm normalises: residual + dropout(x + bias), dropout scaled by 1/keep.
BIOBERT_HD float dropout_add(float x, float bias, float residual, bool kept, float scale) {
  return residual + (kept ? (x + bias) * scale : 0.0f);
}

// LayerNorm of one element, given its row's mean and 1/sqrt(var + eps).
BIOBERT_HD float normalise(float s, float mean, float rstd, float gamma, float beta) {
  return (s - mean) * rstd * gamma + beta;
}

// The input gradient of LayerNorm for one element: `g` the output gradient times gamma,
// `mean_g` and `mean_gx` the row's means of g and of g * x_hat.
BIOBERT_HD float normalise_backward(float g, float x_hat, float rstd, float mean_g,
                                    float mean_gx) {
  return rstd * (g - mean_g - x_hat * mean_gx);
}

// GELU as BERT defines it: x * Phi(x), Phi through erf.
BIOBERT_HD float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

// d gelu / dx = Phi(x) + x * phi(x).
BIOBERT_HD float gelu_derivative(float x) {
  float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
  return cdf + x * pdf;
}

}  // namespace biobert_fused

#ifdef __CUDACC_RTC__
// The kernels. Rows are [rows, H] with H a multiple of 32 up to 1024 (BERT-base 768,
// BERT-large 1024): one warp per row, each lane H / 32 columns held in registers.
namespace biobert_fused {

constexpr int kMaxPerLane = 32;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// y = LayerNorm(residual + dropout(x + bias)); keeps the sum `s` (rounded as stored) and
// each row's mean and 1/std for the backward.
template <typename T>
__device__ void ln_forward(const T* x, const float* bias, const T* residual,
                           const float* gamma, const float* beta, T* y, T* s, float* mean,
                           float* rstd, b_u64 rows, int H, b_u64 key, b_u64 threshold,
                           float scale, float eps) {
  const int lane = threadIdx.x & 31;
  const b_u64 warps = (b_u64)gridDim.x * (blockDim.x >> 5);
  const int per = H >> 5;
  for (b_u64 row = (b_u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows;
       row += warps) {
    float v[kMaxPerLane];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      if (k < per) {
        const int c = lane + 32 * k;
        const b_u64 i = row * H + c;
        float t = dropout_add(load(x, i), bias[c], load(residual, i), keeps(key, i, threshold),
                              scale);
        v[k] = stored(s, t);
        sum += v[k];
      }
    }
    const float m = warp_sum(sum) / H;
    float var = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      if (k < per) var += (v[k] - m) * (v[k] - m);
    }
    const float r = rsqrtf(warp_sum(var) / H + eps);
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      if (k < per) {
        const int c = lane + 32 * k;
        const b_u64 i = row * H + c;
        store(s, i, v[k]);
        store(y, i, normalise(v[k], m, r, gamma[c], beta[c]));
      }
    }
    if (lane == 0) {
      mean[row] = m;
      rstd[row] = r;
    }
  }
}

// The gradients of ln_forward: d_residual (= d s) and dx per element; per warp, its
// partial column sums of dgamma, dbeta and dbias in partial[warp][0..3][H], summed after.
template <typename T>
__device__ void ln_backward(const T* dy, const T* s, const float* mean, const float* rstd,
                            const float* gamma, T* d_residual, T* dx, float* partial,
                            b_u64 rows, int H, b_u64 key, b_u64 threshold, float scale) {
  const int lane = threadIdx.x & 31;
  const b_u64 warp = (b_u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const b_u64 warps = (b_u64)gridDim.x * (blockDim.x >> 5);
  const int per = H >> 5;
  float acc_gamma[kMaxPerLane], acc_beta[kMaxPerLane], acc_bias[kMaxPerLane];
#pragma unroll
  for (int k = 0; k < kMaxPerLane; ++k) acc_gamma[k] = acc_beta[k] = acc_bias[k] = 0.0f;
  for (b_u64 row = warp; row < rows; row += warps) {
    const float m = mean[row], r = rstd[row];
    float g[kMaxPerLane], x_hat[kMaxPerLane];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      if (k < per) {
        const int c = lane + 32 * k;
        const b_u64 i = row * H + c;
        const float go = load(dy, i);
        x_hat[k] = (load(s, i) - m) * r;
        g[k] = go * gamma[c];
        acc_gamma[k] += go * x_hat[k];
        acc_beta[k] += go;
        sum_g += g[k];
        sum_gx += g[k] * x_hat[k];
      }
    }
    const float mean_g = warp_sum(sum_g) / H, mean_gx = warp_sum(sum_gx) / H;
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      if (k < per) {
        const int c = lane + 32 * k;
        const b_u64 i = row * H + c;
        const float ds = normalise_backward(g[k], x_hat[k], r, mean_g, mean_gx);
        const float d = keeps(key, i, threshold) ? ds * scale : 0.0f;
        store(d_residual, i, ds);
        store(dx, i, d);
        acc_bias[k] += d;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kMaxPerLane; ++k) {
    if (k < per) {
      const int c = lane + 32 * k;
      partial[(warp * 3 + 0) * H + c] = acc_gamma[k];
      partial[(warp * 3 + 1) * H + c] = acc_beta[k];
      partial[(warp * 3 + 2) * H + c] = acc_bias[k];
    }
  }
}

// y = gelu(z + bias), element-wise over [rows, cols].
template <typename T>
__device__ void gelu_forward(const T* z, const float* bias, T* y, b_u64 rows, int cols) {
  const b_u64 n = rows * cols;
  for (b_u64 i = (b_u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (b_u64)gridDim.x * blockDim.x) {
    store(y, i, gelu(load(z, i) + bias[i % cols]));
  }
}

// dz = dy * gelu'(z + bias); thread c of block (x, y) walks column c over row chunk y,
// its sum of dz (the bias gradient's share) in partial[y][c].
template <typename T>
__device__ void gelu_backward(const T* dy, const T* z, const float* bias, T* dz,
                              float* partial, b_u64 rows, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const b_u64 chunk = (rows + gridDim.y - 1) / gridDim.y;
  const b_u64 first = blockIdx.y * chunk;
  const b_u64 last = first + chunk < rows ? first + chunk : rows;
  const float b = bias[c];
  float acc = 0.0f;
  for (b_u64 row = first; row < last; ++row) {
    const b_u64 i = row * cols + c;
    const float d = load(dy, i) * gelu_derivative(load(z, i) + b);
    store(dz, i, d);
    acc += d;
  }
  partial[(b_u64)blockIdx.y * cols + c] = acc;
}

}  // namespace biobert_fused

// The entry points the host looks up by name, per storage type (f32, bf16 as its bits).
#define BIOBERT_FUSED_KERNELS(SUFFIX, T)                                                      \
  extern "C" __global__ void biobert_ln_forward_##SUFFIX(                                     \
      const T* x, const float* bias, const T* residual, const float* gamma,                   \
      const float* beta, T* y, T* s, float* mean, float* rstd, b_u64 rows, int H, b_u64 key, \
      b_u64 threshold, float scale, float eps) {                                              \
    biobert_fused::ln_forward(x, bias, residual, gamma, beta, y, s, mean, rstd, rows, H, key, \
                              threshold, scale, eps);                                         \
  }                                                                                           \
  extern "C" __global__ void biobert_ln_backward_##SUFFIX(                                    \
      const T* dy, const T* s, const float* mean, const float* rstd, const float* gamma,      \
      T* d_residual, T* dx, float* partial, b_u64 rows, int H, b_u64 key, b_u64 threshold,    \
      float scale) {                                                                          \
    biobert_fused::ln_backward(dy, s, mean, rstd, gamma, d_residual, dx, partial, rows, H,    \
                               key, threshold, scale);                                        \
  }                                                                                           \
  extern "C" __global__ void biobert_gelu_forward_##SUFFIX(const T* z, const float* bias,     \
                                                           T* y, b_u64 rows, int cols) {      \
    biobert_fused::gelu_forward(z, bias, y, rows, cols);                                      \
  }                                                                                           \
  extern "C" __global__ void biobert_gelu_backward_##SUFFIX(                                  \
      const T* dy, const T* z, const float* bias, T* dz, float* partial, b_u64 rows,          \
      int cols) {                                                                             \
    biobert_fused::gelu_backward(dy, z, bias, dz, partial, rows, cols);                       \
  }

BIOBERT_FUSED_KERNELS(f32, float)
BIOBERT_FUSED_KERNELS(bf16, b_u16)
#endif
