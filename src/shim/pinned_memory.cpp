// Page-locked host memory without the deprecated device argument: tch binds only
// `pin_memory(device)` and `is_pinned(device)`, and libtorch 2.11 prints a deprecation
// warning on every call that passes a device (about 18 lines per micro-batch). With no
// argument, libtorch pins for the current accelerator, which is what we want.

#include <ATen/core/Tensor.h>

#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

// A new tensor handle (an at::Tensor*, as tch's own) holding a pinned copy of `self`, or
// null with `*message` set (freed by biobert_free_message).
at::Tensor* biobert_pin_memory(const at::Tensor* self, char** message) {
  try {
    *message = nullptr;
    return new at::Tensor(self->pin_memory());
  } catch (const std::exception& e) {
    *message = strdup(e.what());
    return nullptr;
  }
}

// 1 when `self` lives in page-locked host memory, 0 when not (or when it cannot be told).
int biobert_is_pinned(const at::Tensor* self) {
  try {
    return self->is_pinned() ? 1 : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // extern "C"
