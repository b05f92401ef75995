// The one C++ file of rto-dist: a C ABI over c10d (TCPStore, PrefixStore, ProcessGroupGloo and,
// with RTO_DIST_NCCL, ProcessGroupNCCL) for src/ffi.rs. Every entry point catches every C++
// exception and returns it as a malloc'd message (NULL on success) that Rust frees with
// rto_dist_error_free, so no exception ever unwinds into Rust.
//
// Tensors arrive as tch's `*mut C_tensor`, which is an `at::Tensor*` (torch-sys torch_api.h);
// copying an at::Tensor copies a handle, never the data, so collectives write into Rust's tensor.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef RTO_DIST_NCCL
#include <nccl.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
// make_intrusive<ProcessGroupNCCL> sizes the object from this translation unit: nccl.h must be the
// header of the libnccl.so.2 that libtorch_cuda.so loads (the wheel's nvidia-nccl-cu13).
static_assert(NCCL_VERSION_CODE == NCCL_VERSION(2, 28, 9),
              "nccl.h is not NCCL 2.28.9, the version torch 2.11's wheel pins: point RTO_NCCL_INCLUDE at "
              "the venv's nvidia/nccl/include");
#endif

namespace {

char* copy_message(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) std::memcpy(out, message.c_str(), message.size() + 1);
  return out;
}

// Runs `body`, turning any exception into the message returned to Rust. c10::Error's what()
// carries a C++ backtrace; the Rust side wants the sentence only.
template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

c10d::ReduceOp reduce_op(int32_t op) {
  switch (op) {
    case 0: return c10d::ReduceOp::SUM;
    case 1: return c10d::ReduceOp::AVG;
    case 2: return c10d::ReduceOp::MAX;
    default: TORCH_CHECK(false, "unknown reduce op code ", op, " (rto-dist passes 0=sum, 1=avg, 2=max)");
  }
}

// The Gloo transport device, chosen as torch's Python does (distributed_c10d.py): one device per
// interface in GLOO_SOCKET_IFNAME, else the address this host's name resolves to (loopback when
// it resolves to nothing).
std::vector<std::shared_ptr<::gloo::transport::Device>> gloo_devices() {
  std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
  const char* ifnames = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifnames != nullptr && ifnames[0] != '\0') {
    std::string list(ifnames);
    size_t start = 0;
    while (start <= list.size()) {
      size_t end = list.find(',', start);
      if (end == std::string::npos) end = list.size();
      if (end > start)
        devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(list.substr(start, end - start)));
      start = end + 1;
    }
  }
  if (devices.empty()) devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return devices;
}

}  // namespace

struct RtoStore {
  c10::intrusive_ptr<c10d::TCPStore> tcp;
};

struct RtoGroup {
  // The store outlives the backend: rank 0's TCPStore server must stay up while peers rendezvous.
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::vector<int64_t> barrier_devices;  // NCCL: the CUDA index a barrier runs on
};

extern "C" {

void rto_dist_error_free(char* message) { std::free(message); }

// A TCPStore: the server when is_server (waiting up to timeout_ms for world_size clients to join
// when wait_workers), else a client that retries connecting to host:port until timeout_ms.
char* rto_dist_store_new(const char* host, uint16_t port, int32_t world_size, int32_t is_server,
                         int32_t wait_workers, int64_t timeout_ms, RtoStore** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<size_t>(world_size);
    opts.waitWorkers = wait_workers != 0;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    opts.multiTenant = true;  // as torch's rank-0 store: several stores may share host:port
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new RtoStore{std::move(tcp)};
  });
}

uint16_t rto_dist_store_port(const RtoStore* store) { return store->tcp->getPort(); }

char* rto_dist_store_num_keys(const RtoStore* store, int64_t* out) {
  return guarded([&] { *out = store->tcp->getNumKeys(); });
}

void rto_dist_store_free(RtoStore* store) { delete store; }

// Joins the process group: the group's keys live under `prefix` in `store` (which is shared,
// not consumed). backend 0 = Gloo, 1 = NCCL (only with RTO_DIST_NCCL; cuda_index is then the
// device this rank's barriers run on).
char* rto_dist_group_new(const RtoStore* store, const char* prefix, int32_t rank, int32_t world_size,
                         int32_t backend, int32_t cuda_index, int64_t timeout_ms, RtoGroup** out) {
  return guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->tcp);
    auto group = std::make_unique<RtoGroup>();
    group->store = prefixed;
    if (backend == 0) {
      // The timeout reaches gloo's context: a dead or stuck peer raises instead of hanging.
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices = gloo_devices();
      group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world_size, opts);
    } else if (backend == 1) {
#ifdef RTO_DIST_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      group->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world_size, opts);
      group->barrier_devices = {cuda_index};
#else
      (void)cuda_index;
      TORCH_CHECK(false, "this build of rto-dist has no NCCL (rebuild with --features rto-dist/nccl)");
#endif
    } else {
      TORCH_CHECK(false, "unknown backend code ", backend);
    }
    *out = group.release();
  });
}

void rto_dist_group_free(RtoGroup* group) { delete group; }

char* rto_dist_all_reduce(RtoGroup* group, at::Tensor* tensor, int32_t op) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    group->backend->allreduce(tensors, opts)->wait();
  });
}

char* rto_dist_broadcast(RtoGroup* group, at::Tensor* tensor, int32_t root) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    group->backend->broadcast(tensors, opts)->wait();
  });
}

char* rto_dist_reduce_scatter(RtoGroup* group, at::Tensor* output, const at::Tensor* input, int32_t op) {
  return guarded([&] {
    at::Tensor in = *input;
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = reduce_op(op);
    group->backend->_reduce_scatter_base(*output, in, opts)->wait();
  });
}

char* rto_dist_all_gather(RtoGroup* group, at::Tensor* output, const at::Tensor* input) {
  return guarded([&] {
    at::Tensor in = *input;
    group->backend->_allgather_base(*output, in)->wait();
  });
}

char* rto_dist_barrier(RtoGroup* group) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    opts.device_ids = group->barrier_devices;
    group->backend->barrier(opts)->wait();
  });
}

}  // extern "C"
