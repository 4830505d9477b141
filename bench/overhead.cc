// Loop overhead benchmark: throughput of two callback-heavy libuv workloads
// without uvstall and with it at several intervals, interleaved in one
// process so that every configuration of a repetition sees the same machine.
//
//   echo  a loopback TCP ping-pong on one loop (client and server): 64-byte
//         messages, one in flight; counts round trips.
//   idle  a uv_idle + uv_check counter: counts loop iterations (the loop
//         polls with a zero timeout, so this is the tightest loop libuv has).
//
// Each window builds a fresh loop, starts the watch (or not), warms up for
// 50 ms, then counts for --window-ms. The order of the configurations
// rotates from one repetition to the next. "off2" is a second baseline: the
// A/A difference shows the noise floor of the machine.
//
// Usage: uvstall-bench-overhead [--reps N] [--window-ms MS] [--intervals 1,10,20,100]
// Prints one JSON object per window: {"workload","config","rep","ops_per_s",
// "ops_per_cpu_s"} (per second of wall time, per second of process CPU time).
#include <uvstall/uvstall.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "bench.h"

namespace {

constexpr uint64_t kWarmupMs = 50;
constexpr size_t kMessageBytes = 64;

using bench::now_ns;

// CPU time of the whole process: the loop thread and uvstall's sentinel and
// writer. Throughput per CPU second does not move when the scheduler gives
// this process less of a busy machine, which throughput per wall second does.
uint64_t cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

struct Window {
  uv_loop_t loop;
  uint64_t ops = 0;
  uint64_t ops0 = 0, t0 = 0, ops1 = 0, t1 = 0;
  uint64_t cpu0 = 0, cpu1 = 0;  // process CPU time (all threads, ours too)
  uint64_t window_ms = 0;
  uv_timer_t timer;
  // echo
  uv_tcp_t server, client, accepted;
  uv_connect_t connect;
  char out[kMessageBytes];
  char cbuf[kMessageBytes], sbuf[kMessageBytes];
  size_t client_got = 0;
  // idle
  uv_idle_t idle;
  uv_check_t check;
};

void fail(const char *what, int rc) {
  std::fprintf(stderr, "uvstall-bench-overhead: %s: %s\n", what, uv_strerror(rc));
  std::exit(1);
}

void on_write(uv_write_t *req, int status) {
  if (status != 0) fail("write", status);
  delete req;
}

void send(uv_tcp_t *tcp, const char *data, size_t len) {
  auto *req = new uv_write_t;
  uv_buf_t b = uv_buf_init(const_cast<char *>(data), unsigned(len));
  int rc = uv_write(req, reinterpret_cast<uv_stream_t *>(tcp), &b, 1, on_write);
  if (rc != 0) fail("uv_write", rc);
}

// The server echoes what it reads; the client counts a round trip when the
// whole message is back and sends the next.
void server_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) return;
  auto *w = static_cast<Window *>(s->data);
  if (n > 0) send(&w->accepted, buf->base, size_t(n));
}
void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *) {
  if (n < 0) return;
  auto *w = static_cast<Window *>(s->data);
  w->client_got += size_t(n);
  if (w->client_got >= kMessageBytes) {
    w->client_got -= kMessageBytes;
    ++w->ops;
    send(&w->client, w->out, kMessageBytes);
  }
}

void on_timer(uv_timer_t *t) {
  auto *w = static_cast<Window *>(t->data);
  if (w->t0 == 0) {
    w->t0 = now_ns();
    w->cpu0 = cpu_ns();
    w->ops0 = w->ops;
    uv_timer_start(t, on_timer, w->window_ms, 0);
    return;
  }
  w->t1 = now_ns();
  w->cpu1 = cpu_ns();
  w->ops1 = w->ops;
  uv_stop(&w->loop);
}

struct Rates {
  double per_wall_s, per_cpu_s;
};

Rates run_window(const std::string &workload, int interval_ms, uint64_t window_ms) {
  auto *w = new Window();
  std::memset(w->out, 'x', sizeof w->out);
  uv_loop_init(&w->loop);
  w->window_ms = window_ms;
  uvstall_t *watch = nullptr;
  if (interval_ms > 0) {
    uvstall_options_t o;
    uvstall_options_init(&o);
    o.interval_ms = uint32_t(interval_ms);
    o.threshold_ms = uint32_t(interval_ms * 2 > 100 ? interval_ms * 2 : 100);
    o.on_report = bench::discard_report;
    watch = bench::start_or_exit(&w->loop, o);
  }
  if (workload == "echo") {
    for (uv_tcp_t *t : {&w->server, &w->client, &w->accepted}) {
      uv_tcp_init(&w->loop, t);
      t->data = w;
    }
    sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    if (int rc = uv_tcp_bind(&w->server, reinterpret_cast<sockaddr *>(&addr), 0)) fail("bind", rc);
    if (int rc = uv_listen(reinterpret_cast<uv_stream_t *>(&w->server), 1,
                           [](uv_stream_t *s, int status) {
                             if (status != 0) fail("listen", status);
                             auto *w = static_cast<Window *>(s->data);
                             uv_accept(s, reinterpret_cast<uv_stream_t *>(&w->accepted));
                             uv_tcp_nodelay(&w->accepted, 1);
                             uv_read_start(reinterpret_cast<uv_stream_t *>(&w->accepted),
                                           [](uv_handle_t *h, size_t, uv_buf_t *b) {
                                             auto *w = static_cast<Window *>(h->data);
                                             *b = uv_buf_init(w->sbuf, sizeof w->sbuf);
                                           },
                                           server_read);
                           }))
      fail("uv_listen", rc);
    int len = sizeof addr;
    uv_tcp_getsockname(&w->server, reinterpret_cast<sockaddr *>(&addr), &len);
    w->connect.data = w;
    uv_tcp_connect(&w->connect, &w->client, reinterpret_cast<sockaddr *>(&addr),
                   [](uv_connect_t *req, int status) {
                     if (status != 0) fail("connect", status);
                     auto *w = static_cast<Window *>(req->data);
                     uv_tcp_nodelay(&w->client, 1);
                     uv_read_start(reinterpret_cast<uv_stream_t *>(&w->client),
                                   [](uv_handle_t *h, size_t, uv_buf_t *b) {
                                     auto *w = static_cast<Window *>(h->data);
                                     *b = uv_buf_init(w->cbuf, sizeof w->cbuf);
                                   },
                                   client_read);
                     send(&w->client, w->out, kMessageBytes);
                   });
  } else {
    uv_idle_init(&w->loop, &w->idle);
    uv_check_init(&w->loop, &w->check);
    w->idle.data = w->check.data = w;
    uv_idle_start(&w->idle, [](uv_idle_t *h) { ++static_cast<Window *>(h->data)->ops; });
    uv_check_start(&w->check, [](uv_check_t *h) { ++static_cast<Window *>(h->data)->ops; });
  }
  uv_timer_init(&w->loop, &w->timer);
  w->timer.data = w;
  uv_timer_start(&w->timer, on_timer, kWarmupMs, 0);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (watch != nullptr) uvstall_stop(watch);
  uv_walk(&w->loop, [](uv_handle_t *h, void *) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
  while (uv_run(&w->loop, UV_RUN_NOWAIT) != 0) {
  }
  if (int rc = uv_loop_close(&w->loop)) fail("uv_loop_close", rc);
  const double ops = double(w->ops1 - w->ops0);
  const Rates rates{ops / (double(w->t1 - w->t0) / 1e9), ops / (double(w->cpu1 - w->cpu0) / 1e9)};
  delete w;
  return rates;
}

}  // namespace

int main(int argc, char **argv) {
  int reps = 5;
  uint64_t window_ms = 300;
  std::vector<int> intervals = {1, 10, 20, 100};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--window-ms") == 0) window_ms = uint64_t(std::atoll(argv[i + 1]));
    else if (std::strcmp(argv[i], "--intervals") == 0) {
      intervals.clear();
      for (double iv : bench::parse_list(argv[i + 1])) intervals.push_back(int(iv));
    } else {
      std::fprintf(stderr, "usage: uvstall-bench-overhead [--reps N] [--window-ms MS] [--intervals 1,10,20,100]\n");
      return 2;
    }
  }
  bench::configure_for_bench();
  // uvstall's threads outlive a watch. Start them before the first window,
  // so every window (baselines too) runs in a process that has them: this
  // measures what a watch costs, not the step from one thread to several
  // (docs/PERFORMANCE.md, section 7, measures that step).
  run_window("idle", 100, 1);
  // Configurations: 0 = no watch ("off", then "off2"), else the interval.
  std::vector<std::pair<std::string, int>> configs = {{"off", 0}, {"off2", 0}};
  for (int iv : intervals) configs.push_back({std::to_string(iv), iv});
  for (int r = 0; r < reps; ++r) {
    for (const char *workload : {"echo", "idle"}) {
      for (size_t k = 0; k < configs.size(); ++k) {
        const auto &[name, iv] = configs[(k + size_t(r)) % configs.size()];
        const Rates rate = run_window(workload, iv, window_ms);
        std::printf("{\"workload\":\"%s\",\"config\":\"%s\",\"rep\":%d,\"ops_per_s\":%.1f,"
                    "\"ops_per_cpu_s\":%.1f}\n",
                    workload, name.c_str(), r, rate.per_wall_s, rate.per_cpu_s);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
