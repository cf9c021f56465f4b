// The variable-length flash-attention kernel (`_flash_attention_forward` with cumulative
// sequence lengths, the kernel behind SDPA on nested tensors), which tch does not bind:
// attention over the real tokens of a batch packed into one [tokens, heads, head_dim]
// tensor, no padding and no mask. libtorch registers its backward
// (FlashAttentionBackward0), so autograd differentiates through it. CUDA with bf16 or
// fp16 inputs only; anything else comes back as the kernel's own message.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_flash_attention_forward.h>

#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

// A new tensor handle (an at::Tensor*, as tch's own) with the attention output
// [tokens, heads, head_dim], or null with `*message` set (freed by biobert_free_message).
// `cu_seqlens` is int32 [sequences + 1] on the device: 0, then each sequence's end.
at::Tensor* biobert_flash_attention_varlen(const at::Tensor* q, const at::Tensor* k,
                                           const at::Tensor* v, const at::Tensor* cu_seqlens,
                                           int64_t max_len, double dropout_p,
                                           char** message) {
  try {
    *message = nullptr;
    auto out = at::_flash_attention_forward(*q, *k, *v, *cu_seqlens, *cu_seqlens, max_len,
                                            max_len, dropout_p, /*is_causal=*/false,
                                            /*return_debug_mask=*/false);
    return new at::Tensor(std::get<0>(out));
  } catch (const std::exception& e) {
    *message = strdup(e.what());
    return nullptr;
  }
}

}  // extern "C"
