// ParallelFor: the fixed parts of a kernel's work on XLA's intra-op thread pool.
#ifndef REDCONV_PARALLEL_FOR_H_
#define REDCONV_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace redconv {

// Runs fn(0..parts-1) on the pool and the calling thread. Only parts a thread has
// started are waited for: a task that starts late finds nothing left and returns, so
// handlers waiting inside the pool's own threads cannot deadlock each other.
template <typename F>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t parts, F fn) {
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> running{0};
    std::mutex mu;
    std::condition_variable done;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, parts, &fn]() {
    for (;;) {
      shared->running.fetch_add(1);
      const int64_t i = shared->next.fetch_add(1);
      if (i >= parts) break;
      fn(i);
      shared->running.fetch_sub(1);
    }
    if (shared->running.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->done.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), parts) - 1;
  // A helper that starts after the caller returned finds the counter exhausted and
  // leaves without touching `fn` (it holds `shared` itself).
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([work]() { work(); });
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->done.wait(lock, [&] { return shared->running.load() == 0; });
}

// fn(n0, n1) over the images [0, n) cut into min(n, max_parts) contiguous parts: a fixed
// cut (not the thread count), so every output is computed the same way on every machine.
template <typename F>
void ParallelForImages(xla::ffi::ThreadPool& pool, int64_t n, int64_t max_parts, F fn) {
  const int64_t parts = std::min<int64_t>(n, max_parts);
  ParallelFor(pool, parts, [&](int64_t i) { fn(n * i / parts, n * (i + 1) / parts); });
}

// The sum over the images [0, n) that fn(n0, n1, partial) accumulates into a zeroed
// buffer of `size` floats per part, in the first `size` floats of the result:
// min(n, max_parts) fixed parts (at least one, so no images give zeros), added in part
// order, so the sums are the same bits whatever thread ran which part and on every
// machine (the weight gradients).
template <typename F>
std::vector<float> SumOverImageParts(xla::ffi::ThreadPool& pool, int64_t n,
                                     int64_t max_parts, int64_t size, F fn) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(n, max_parts));
  std::vector<float> partial(parts * size, 0.0f);
  ParallelFor(pool, parts, [&](int64_t i) {
    fn(n * i / parts, n * (i + 1) / parts, partial.data() + i * size);
  });
  // Part by part into the first (vectorised), each element's sum in part order.
  for (int64_t i = 1; i < parts; ++i)
    for (int64_t k = 0; k < size; ++k) partial[k] += partial[i * size + k];
  return partial;
}

}  // namespace redconv

#endif  // REDCONV_PARALLEL_FOR_H_
