// Gradient-ready hooks, which tch does not bind: a post hook on each parameter's
// AccumulateGrad node, as PyTorch DDP's reducer registers them. The engine runs a node's
// post hooks right after the node, so the hook sees the parameter's gradient accumulated
// (queued, on a GPU) for this backward pass. It calls back into Rust with the parameter's
// index; the callback must not throw or unwind.
//
// The accumulators are held here: a leaf keeps only a weak pointer to its AccumulateGrad
// node, so without a strong one each backward pass would make a new node, hookless.

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using torch::autograd::Node;
using torch::autograd::variable_list;

typedef void (*ReadyCallback)(void* context, size_t index);

struct ReadyHook : torch::autograd::FunctionPostHook {
  ReadyHook(ReadyCallback callback, void* context, size_t index)
      : callback(callback), context(context), index(index) {}
  variable_list operator()(const variable_list& outputs, const variable_list&) override {
    callback(context, index);
    return outputs;
  }
  ReadyCallback callback;
  void* context;
  size_t index;
};

struct Hooks {
  std::vector<std::shared_ptr<Node>> accumulators;
  std::vector<uintptr_t> keys;
};

}  // namespace

extern "C" {

// Registers a hook on each of `count` leaf tensors; returns the hooks' handle, or null with
// `*error` set (free it with biobert_free_message).
void* biobert_grad_hooks_register(const at::Tensor* const* params, size_t count,
                                  ReadyCallback callback, void* context, char** error) {
  auto hooks = std::make_unique<Hooks>();
  try {
    for (size_t i = 0; i < count; ++i) {
      auto accumulator = torch::autograd::impl::grad_accumulator(*params[i]);
      if (!accumulator) {
        throw std::runtime_error("parameter " + std::to_string(i) +
                                 " is not a leaf that requires grad");
      }
      hooks->keys.push_back(
          accumulator->add_post_hook(std::make_unique<ReadyHook>(callback, context, i)));
      hooks->accumulators.push_back(std::move(accumulator));
    }
    return hooks.release();
  } catch (const std::exception& e) {
    for (size_t i = 0; i < hooks->keys.size(); ++i) {
      hooks->accumulators[i]->del_post_hook(hooks->keys[i]);
    }
    *error = strdup(e.what());
    return nullptr;
  }
}

// Removes the hooks and lets go of the accumulators.
void biobert_grad_hooks_free(void* handle) {
  auto* hooks = static_cast<Hooks*>(handle);
  for (size_t i = 0; i < hooks->keys.size(); ++i) {
    hooks->accumulators[i]->del_post_hook(hooks->keys[i]);
  }
  delete hooks;
}

}  // extern "C"
