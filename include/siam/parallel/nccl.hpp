// The NCCL communicator: gradients summed GPU to GPU (NVLink, InfiniBand, or PCIe and
// sockets), one GPU per rank. Bootstrapped through MPI: rank 0 creates the NCCL unique id
// and MPI broadcasts it; the host-side collectives (handshake, flags) and the barrier also
// go through MPI. Needs nvcc or a C++ compiler that sees the CUDA headers, and links
// libnccl (CMake: SIAM_HAS_NCCL). Never included by the umbrella header.
//
//   siam::parallel::MpiEnvironment env(&argc, &argv);
//   siam::parallel::MpiCommunicator mpi(env);
//   siam::parallel::NcclCommunicator comm(mpi);      // GPU = local rank % number of GPUs
//   siam::parallel::DataParallel<float, siam::Cuda> dp(comm, params);
//
// NCCL runs on siam's context stream of the chosen device (siam::cuda::stream()), so it is
// ordered with every siam kernel without extra synchronisation. Each collective is polled
// against the MPI communicator's timeout: on expiry the NCCL communicator is aborted
// (ncclCommAbort) and the job ended with a message naming the call and the rank.
#pragma once

#include <nccl.h>

#include <chrono>
#include <string>
#include <thread>

#include "siam/backend/cuda_runtime.hpp"
#include "siam/parallel/mpi.hpp"

namespace siam::parallel {

class NcclCommunicator final : public Communicator {
 public:
  /// Uses GPU `device`, or local_rank % device_count() when device < 0. Throws cuda_error
  /// when there is no GPU, comm_error when NCCL cannot form the communicator.
  explicit NcclCommunicator(MpiCommunicator& mpi, int device = -1) : mpi_(mpi) {
    cuda::require_device();
    device_ = device >= 0 ? device : mpi.local_rank() % cuda::device_count();
    SIAM_CUDA_CHECK(cudaSetDevice(device_));
    stream_ = cuda::context(device_).stream();
    ncclUniqueId id{};
    if (mpi.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    mpi.broadcast_host(&id, sizeof id, 0);
    check(ncclCommInitRank(&comm_, mpi.size(), id, mpi.rank()), "ncclCommInitRank");
  }
  ~NcclCommunicator() override {
    if (!comm_) return;
    (void)cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
  }

  int rank() const override { return mpi_.rank(); }
  int size() const override { return mpi_.size(); }
  int local_rank() const override { return mpi_.local_rank(); }
  Memory memory() const override { return Memory::device; }
  std::string name() const override { return "nccl"; }
  int device() const { return device_; }

  void barrier() override {
    SIAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    mpi_.barrier();
  }

 protected:
  void do_all_reduce_sum(void* buf, std::size_t n, DType t) override {
    check(ncclAllReduce(buf, buf, n, type(t), ncclSum, comm_, stream_), "ncclAllReduce");
    wait("ncclAllReduce");
  }
  void do_broadcast(void* buf, std::size_t n, DType t, int root) override {
    check(ncclBroadcast(buf, buf, n, type(t), root, comm_, stream_), "ncclBroadcast");
    wait("ncclBroadcast");
  }
  void do_all_gather(const void* in, void* out, std::size_t n, DType t) override {
    check(ncclAllGather(in, out, n, type(t), comm_, stream_), "ncclAllGather");
    wait("ncclAllGather");
  }
  void do_all_gather_host(const void* in, void* out, std::size_t bytes) override {
    mpi_.all_gather_host(in, bytes, out);
  }
  void do_broadcast_host(void* buf, std::size_t bytes, int root) override {
    mpi_.broadcast_host(buf, bytes, root);
  }

 private:
  static ncclDataType_t type(DType t) {
    return t == DType::f32 ? ncclFloat32 : t == DType::f64 ? ncclFloat64 : ncclUint8;
  }
  void check(ncclResult_t rc, const char* call) const {
    if (rc != ncclSuccess)
      throw comm_error(std::string(call) + " failed on " + mpi_.where() + ": " +
                       ncclGetErrorString(rc));
  }
  // Waits for the stream (the collective and everything before it) up to the timeout.
  void wait(const char* call) {
    using clock = std::chrono::steady_clock;
    const double limit = mpi_.timeout_seconds();
    const auto deadline = clock::now() + std::chrono::duration<double>(limit);
    for (unsigned polls = 0;; ++polls) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) SIAM_CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
      check(async, call);
      if (limit > 0 && (polls & 63) == 0 && clock::now() > deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        mpi_.abort(std::string(call) + " did not complete within the timeout on " + mpi_.where() +
                   ": another rank died, hangs or stopped calling collectives; "
                   "ending the job");
      }
      std::this_thread::yield();
    }
  }

  MpiCommunicator& mpi_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
};

}  // namespace siam::parallel
