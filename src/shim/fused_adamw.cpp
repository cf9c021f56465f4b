// libtorch's fused AdamW kernel (the one behind `torch.optim.AdamW(fused=True)`), which
// tch does not bind. Built by build.rs against the headers of the torch the binary links.
// Tensors arrive as tch's handles (pointers to at::Tensor); errors come back as a message
// that the caller frees with biobert_free_message, never as a C++ exception.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>

extern "C" {

char* biobert_fused_adamw(const at::Tensor* param, const at::Tensor* grad,
                          const at::Tensor* exp_avg, const at::Tensor* exp_avg_sq,
                          const at::Tensor* step, const at::Tensor* grad_scale,
                          const at::Tensor* found_inf, double lr, double beta1, double beta2,
                          double weight_decay, double eps) {
  try {
    // Optional tensors arrive as null pointers when absent.
    auto optional = [](const at::Tensor* t) {
      return t ? std::optional<at::Tensor>(*t) : std::optional<at::Tensor>();
    };
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {*step}, lr, beta1,
                      beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false,
                      optional(grad_scale), optional(found_inf));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

void biobert_free_message(char* message) { free(message); }

}  // extern "C"
