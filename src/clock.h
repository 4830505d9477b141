// Clocks shared by the loop side, the sentinel and the signal handler.
// Both functions are async-signal-safe: clock_gettime is on POSIX's list and
// on Linux is a vDSO call (no syscall) for these clocks.
#pragma once

#include <cstdint>
#include <ctime>

namespace uvstall::internal {

// CLOCK_MONOTONIC in nanoseconds: every duration in uvstall is measured on it.
inline uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// CLOCK_REALTIME in nanoseconds since the epoch: only for report timestamps.
inline uint64_t wall_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

constexpr uint64_t kNsPerMs = 1000000;

inline double ns_to_ms(uint64_t ns) { return double(ns) / 1e6; }

}  // namespace uvstall::internal
