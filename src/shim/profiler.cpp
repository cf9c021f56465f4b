// libtorch's Kineto profiler (what `torch.profiler.profile` drives), which tch does not bind:
// start recording CPU operators (and CUDA kernels through CUPTI), stop and write a Chrome
// trace. Errors come back as a malloc'd message, never as a C++ exception.

#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>

namespace {

using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

// Operators' input shapes (trace_summary.py computes the GEMMs' FLOPs from them; the trace
// file carries no FLOP counts), without stacks or memory events, which would make each
// step's trace several times larger.
ProfilerConfig config() {
  return ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/true,
                        /*profile_memory=*/false, /*with_stack=*/false,
                        /*with_flops=*/false);
}

std::set<ActivityType> activities(int cuda) {
  std::set<ActivityType> set{ActivityType::CPU};
  if (cuda) {
    set.insert(ActivityType::CUDA);
  }
  return set;
}

}  // namespace

extern "C" {

char* biobert_profiler_start(int cuda) {
  try {
    torch::autograd::profiler::prepareProfiler(config(), activities(cuda));
    torch::autograd::profiler::enableProfiler(config(), activities(cuda));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

char* biobert_profiler_stop(const char* path) {
  try {
    auto result = torch::autograd::profiler::disableProfiler();
    result->save(path);
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

}  // extern "C"
