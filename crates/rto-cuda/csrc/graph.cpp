// A CUDA graph of libtorch work for Rust callers (rto_cuda::CudaGraph): the caller's ops run
// between capture_begin and capture_end on a pooled side stream (CUDA cannot capture the legacy
// default stream that tch's ops use), then every replay re-launches them on the caller's stream.
// Errors come back as a malloc'ed message, never as an exception across the C boundary.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>

namespace {

struct Graph {
  explicit Graph(c10::DeviceIndex device) : device(device) {}
  c10::DeviceIndex device;
  at::cuda::CUDAGraph graph;
  std::optional<c10::cuda::CUDAStream> side;
  std::optional<c10::cuda::CUDAStream> caller;
  // The current device before enter_side_stream: capture_begin captures the current device's
  // current stream, so the graph's device is made current meanwhile.
  c10::DeviceIndex previous_device = -1;
};

template <typename F>
int guarded(char** error, F&& body) {
  *error = nullptr;
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    *error = strdup(e.what());
  } catch (...) {
    *error = strdup("unknown C++ exception");
  }
  return 1;
}

Graph* as_graph(void* graph) { return static_cast<Graph*>(graph); }

}  // namespace

extern "C" {

void* rto_cuda_graph_new(int device, char** error) {
  Graph* made = nullptr;
  guarded(error, [&] { made = new Graph(static_cast<c10::DeviceIndex>(device)); });
  return made;
}

// Makes a pooled stream current after it has waited for the caller's stream: warm-up runs and
// the capture happen there, ordered after everything the caller queued.
int rto_cuda_graph_enter_side_stream(void* graph, char** error) {
  return guarded(error, [&] {
    Graph* g = as_graph(graph);
    g->previous_device = c10::cuda::current_device();
    c10::cuda::set_device(g->device);
    auto caller = c10::cuda::getCurrentCUDAStream(g->device);
    auto side = c10::cuda::getStreamFromPool(false, g->device);
    c10::cuda::CUDAEvent ready;
    ready.record(caller);
    ready.block(side);
    c10::cuda::setCurrentCUDAStream(side);
    g->caller = caller;
    g->side = side;
  });
}

// Gives the caller its stream back; it waits for what ran on the side stream.
int rto_cuda_graph_leave_side_stream(void* graph, char** error) {
  return guarded(error, [&] {
    Graph* g = as_graph(graph);
    if (g->side && g->caller) {
      c10::cuda::CUDAEvent done;
      done.record(*g->side);
      done.block(*g->caller);
      c10::cuda::setCurrentCUDAStream(*g->caller);
      g->side.reset();
    }
    if (g->previous_device >= 0) {
      c10::cuda::set_device(g->previous_device);
      g->previous_device = -1;
    }
  });
}

int rto_cuda_graph_capture_begin(void* graph, char** error) {
  return guarded(error, [&] { as_graph(graph)->graph.capture_begin(); });
}

int rto_cuda_graph_capture_end(void* graph, char** error) {
  return guarded(error, [&] { as_graph(graph)->graph.capture_end(); });
}

int rto_cuda_graph_replay(void* graph, char** error) {
  return guarded(error, [&] { as_graph(graph)->graph.replay(); });
}

void rto_cuda_graph_free(void* graph) { delete as_graph(graph); }

void rto_cuda_free_message(char* message) { std::free(message); }

}  // extern "C"
