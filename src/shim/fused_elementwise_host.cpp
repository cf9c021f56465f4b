// A host build of the fused element-wise kernels' device functions
// (fused_elementwise.cuh), for the tests: each function below walks the rows as one warp
// of the kernel does, with the row sums taken in order instead of by shuffles, so that the
// tests can check the kernels' arithmetic against libtorch's unfused operations on a host
// without a GPU. f32 storage; bf16 rounding is tested on its own.

#include "fused_elementwise.cuh"

using namespace biobert_fused;

extern "C" {

uint32_t biobert_fused_random_bits(uint64_t key, uint64_t i) { return random_bits(key, i); }

void biobert_fused_philox(uint32_t ctr[4], uint32_t key0, uint32_t key1) {
  philox4x32_10(ctr, key0, key1);
}

bool biobert_fused_keeps(uint64_t key, uint64_t i, uint64_t threshold) {
  return keeps(key, i, threshold);
}

uint16_t biobert_fused_float_to_bf16(float f) { return float_to_bf16(f); }

float biobert_fused_bf16_to_float(uint16_t h) { return bf16_to_float(h); }

void biobert_fused_ln_forward(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, float* y, float* s,
                              float* mean, float* rstd, uint64_t rows, int H, uint64_t key,
                              uint64_t threshold, float scale, float eps) {
  for (uint64_t row = 0; row < rows; ++row) {
    float sum = 0.0f;
    for (int c = 0; c < H; ++c) {
      const uint64_t i = row * H + c;
      s[i] = dropout_add(x[i], bias[c], residual[i], keeps(key, i, threshold), scale);
      sum += s[i];
    }
    const float m = sum / H;
    float var = 0.0f;
    for (int c = 0; c < H; ++c) var += (s[row * H + c] - m) * (s[row * H + c] - m);
    const float r = 1.0f / sqrtf(var / H + eps);
    for (int c = 0; c < H; ++c) {
      const uint64_t i = row * H + c;
      y[i] = normalise(s[i], m, r, gamma[c], beta[c]);
    }
    mean[row] = m;
    rstd[row] = r;
  }
}

// dgamma, dbeta, dbias: [H] each, summed over the rows.
void biobert_fused_ln_backward(const float* dy, const float* s, const float* mean,
                               const float* rstd, const float* gamma, float* d_residual,
                               float* dx, float* dgamma, float* dbeta, float* dbias,
                               uint64_t rows, int H, uint64_t key, uint64_t threshold,
                               float scale) {
  for (int c = 0; c < H; ++c) dgamma[c] = dbeta[c] = dbias[c] = 0.0f;
  for (uint64_t row = 0; row < rows; ++row) {
    const float m = mean[row], r = rstd[row];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int c = 0; c < H; ++c) {
      const uint64_t i = row * H + c;
      const float x_hat = (s[i] - m) * r, g = dy[i] * gamma[c];
      dgamma[c] += dy[i] * x_hat;
      dbeta[c] += dy[i];
      sum_g += g;
      sum_gx += g * x_hat;
    }
    const float mean_g = sum_g / H, mean_gx = sum_gx / H;
    for (int c = 0; c < H; ++c) {
      const uint64_t i = row * H + c;
      const float ds = normalise_backward(dy[i] * gamma[c], (s[i] - m) * r, r, mean_g, mean_gx);
      d_residual[i] = ds;
      dx[i] = keeps(key, i, threshold) ? ds * scale : 0.0f;
      dbias[c] += dx[i];
    }
  }
}

void biobert_fused_gelu_forward(const float* z, const float* bias, float* y, uint64_t rows,
                                int cols) {
  for (uint64_t i = 0; i < rows * cols; ++i) y[i] = gelu(z[i] + bias[i % cols]);
}

void biobert_fused_gelu_backward(const float* dy, const float* z, const float* bias, float* dz,
                                 float* dbias, uint64_t rows, int cols) {
  for (int c = 0; c < cols; ++c) dbias[c] = 0.0f;
  for (uint64_t i = 0; i < rows * cols; ++i) {
    dz[i] = dy[i] * gelu_derivative(z[i] + bias[i % cols]);
    dbias[i % cols] += dz[i];
  }
}

}  // extern "C"
