// The metrics endpoint (metrics_addr) and textfile (metrics_file): one
// thread of uvstall's own, with its own libuv loop, never a watched loop.
#pragma once

#include "config.h"

namespace uvstall::internal {

// Limits of the endpoint: what a slow or hostile client can take.
constexpr int kMetricsMaxConnections = 16;     // more are accepted and closed at once
constexpr size_t kMetricsMaxRequestBytes = 8192;  // a longer request gets 431
constexpr uint32_t kMetricsTimeoutMs = 5000;   // whole request and response
constexpr uint32_t kMetricsFileEveryMs = 1000; // textfile rewrite period

// Once, at the process's first start: binds metrics_addr (so a bad or busy
// address fails uvstall_start with UVSTALL_EMETRICSBIND) and starts the
// thread. 0 when neither metrics_addr nor metrics_file is set.
int metrics_server_start(const ProcessConfig &p);

}  // namespace uvstall::internal
