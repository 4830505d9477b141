// Loop-lag metrics on real loops with injected stalls: uvstall_get_stats
// and "metrics" records against the schedule that was injected.
//
// Tolerances (noisy 2-core machine): a tick after a stall of D ms is late by
// D minus up to one interval (the stall starts anywhere in the interval)
// plus scheduling delay: D - interval - 2 <= max lateness <= D + 30. Counts
// of hidden ticks follow from that lateness, so they are checked with the
// same slack: (D - interval - 2) / interval - 1 <= hidden <= (D + 30) / interval.
#include <arpa/inet.h>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <cstring>

#include "harness.h"

namespace {

constexpr double kLateMs = 30;

uvstall_stats_t stats_of(uvstall_t *w) {
  uvstall_stats_t st;
  std::memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  REQUIRE(uvstall_get_stats(w, &st) == 0);
  return st;
}

}  // namespace

TEST_SUITE("metrics") {
  TEST_CASE("stats match an injected schedule: raw lateness, corrected delay, utilization") {
    constexpr int kInterval = 10;
    uvt::WatchedLoop wl([](uvstall_options_t *o) { o->interval_ms = kInterval; });
    REQUIRE(wl.start_rc == 0);
    uv_loop_configure(&wl.loop, UV_METRICS_IDLE_TIME);
    // 1.5 s of loop: stalls of 300 ms and 500 ms, idle otherwise.
    wl.after(200, [] { uvstall_test_busy(300); });
    wl.after(800, [] { uvstall_test_sleep(500); });
    wl.after(1500, [] {});
    const uint64_t t0 = uvt::now_ns();
    wl.run();
    const double elapsed_ms = double(uvt::now_ns() - t0) / 1e6;
    REQUIRE(wl.col.wait_count("stall_end", 2, 3000));
    const uvstall_stats_t st = stats_of(wl.watch);
    INFO("elapsed " << elapsed_ms << " ms, ticks " << st.ticks << ", lateness p50/p99/max "
                    << st.lateness_p50_ms << "/" << st.lateness_p99_ms << "/"
                    << st.lateness_max_ms << ", delay count/p50/p90/p99 " << st.delay_count
                    << "/" << st.delay_p50_ms << "/" << st.delay_p90_ms << "/" << st.delay_p99_ms
                    << ", utilization " << st.utilization);
    CHECK(st.stalls == 2);
    CHECK(st.lateness_count == st.ticks);
    // Ticks: the 700 ms not stalled at one per 10 ms, give or take.
    CHECK(st.ticks >= 50);
    CHECK(st.ticks <= 80);
    CHECK(st.lateness_p50_ms < 10);  // an idle loop's tick is punctual (load aside)
    CHECK(st.lateness_max_ms >= 500 - kInterval - 2);
    CHECK(st.lateness_max_ms <= 500 + kLateMs);
    CHECK(st.lateness_min_ms >= 0);
    // Raw: two late ticks among ~70 sit above p95 (but p99 sees one): the
    // raw p95 says nothing of 800 ms of stalls.
    CHECK(st.lateness_p95_ms < 50);
    // Corrected: the ~28 and ~48 hidden ticks are counted.
    const uint64_t hidden = st.delay_count - st.lateness_count;
    CHECK(hidden >= (300 - kInterval - 2) / kInterval - 1 + (500 - kInterval - 2) / kInterval - 1);
    CHECK(hidden <= (300 + kLateMs) / kInterval + (500 + kLateMs) / kInterval);
    // About half the values are stall delays: the median is tens of ms, p90
    // is in the hundreds, where the raw view says "punctual".
    CHECK(st.delay_p50_ms > 10);
    CHECK(st.delay_p90_ms > 200);
    CHECK(st.delay_p99_ms >= 400);
    CHECK(st.delay_p99_ms <= 500 + kLateMs);
    CHECK(st.delay_mean_ms > st.lateness_mean_ms);
    // Busy 800 ms of the elapsed time (plus a little of ours).
    CHECK(st.utilization >= 800 / elapsed_ms - 0.05);
    CHECK(st.utilization <= 800 / elapsed_ms + 0.15);

    // A reset starts a new window.
    REQUIRE(uvstall_stats_reset(wl.watch) == 0);
    const uvstall_stats_t z = stats_of(wl.watch);
    CHECK(z.stalls == 0);
    CHECK(z.ticks == 0);
    CHECK(z.lateness_count == 0);
    CHECK(z.delay_count == 0);
    CHECK(z.lateness_p99_ms == 0);
    CHECK(uvstall_stats_reset(nullptr) == UVSTALL_EINVAL);
  }

  TEST_CASE("a loop that does not track idle time has utilization -1") {
    uvt::WatchedLoop wl;
    wl.after(100, [] {});
    wl.run();
    CHECK(stats_of(wl.watch).utilization == -1);
  }

  TEST_CASE("metrics records every metrics_interval_ms, with the window's stall") {
    uvt::WatchedLoop wl([](uvstall_options_t *o) {
      o->interval_ms = 10;
      o->metrics_interval_ms = 200;
    });
    REQUIRE(wl.start_rc == 0);
    uv_loop_configure(&wl.loop, UV_METRICS_IDLE_TIME);
    wl.after(250, [] { uvstall_test_busy(300); });
    wl.after(1000, [] {});
    wl.run();
    REQUIRE(wl.col.wait_count("metrics", 5, 3000));
    const auto recs = wl.col.of_type("metrics");
    uint64_t stalls = 0;
    double max_late = 0;
    for (const auto &r : recs) {
      INFO(r.j.dump());
      CHECK(r.j["window_ms"].get<double>() >= 150);
      CHECK(r.j["window_ms"].get<double>() <= 400);
      CHECK(r.j["tid"] == uvt::tid());
      stalls += r.j["stalls"].get<uint64_t>();
      max_late = std::max(max_late, r.j["lateness_ms"]["max"].get<double>());
      CHECK(r.j["lateness_ms"]["p50"].get<double>() <= r.j["lateness_ms"]["p99"].get<double>());
      CHECK(r.j["delay_ms"]["count"].get<uint64_t>() >= r.j["lateness_ms"]["count"].get<uint64_t>());
      CHECK(r.j["utilization"].is_number());
    }
    CHECK(stalls == 1);
    CHECK(max_late >= 300 - 10 - 2);
    CHECK(max_late <= 300 + kLateMs);
  }
}

// ---- The endpoint, in a host process of its own (metrics_addr is
// process-wide): test/metrics_host.cc. ----

namespace {

struct Host {
  pid_t pid = -1;
  int out = -1;  // the host's stdout
  int port = 0;
  std::string file;
  ~Host() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (out >= 0) close(out);
  }
};

int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a);
  socklen_t n = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr *>(&a), &n);
  close(s);
  return ntohs(a.sin_port);
}

// Starts the host and waits for its "ready" line.
void spawn_host(Host *h, int run_ms, const std::vector<std::string> &stalls,
                const std::string &file = "-") {
  const char *exe = std::getenv("UVSTALL_TEST_METRICS_HOST");
  REQUIRE(exe != nullptr);
  h->port = free_port();
  h->file = file;
  std::vector<std::string> args = {exe, "127.0.0.1:" + std::to_string(h->port), file, "10",
                                   std::to_string(run_ms)};
  args.insert(args.end(), stalls.begin(), stalls.end());
  int p[2];
  REQUIRE(pipe(p) == 0);
  h->pid = fork();
  if (h->pid == 0) {
    dup2(p[1], 1);
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exe, argv.data());
    _exit(127);
  }
  close(p[1]);
  h->out = p[0];
  char buf[64] = {};
  REQUIRE(read(h->out, buf, sizeof buf - 1) > 0);
  REQUIRE(std::string(buf).find("ready") != std::string::npos);
}

int connect_to(int port) {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
    close(s);
    return -1;
  }
  timeval tv{10, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return s;
}

std::string read_all(int s) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(s, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

// One request on a plain socket; the whole answer (the server closes).
std::string http(int port, const std::string &request) {
  const int s = connect_to(port);
  if (s < 0) return {};
  (void)!send(s, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out = read_all(s);
  close(s);
  return out;
}

std::string scrape(int port) {
  const std::string r = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  const size_t body = r.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : r.substr(body + 4);
}

// The value of one series ("name{labels}") in an exposition; -1 if absent.
double sample(const std::string &text, const std::string &series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + series.size() + 2, nullptr);
}

size_t fds_of(pid_t pid) {
  size_t n = 0;
  DIR *d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

bool have(const char *tool) {
  return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0;
}

std::string run_capture(const std::string &cmd, int *status) {
  std::string out;
  FILE *f = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  *status = pclose(f);
  return out;
}

}  // namespace

TEST_SUITE("metrics endpoint") {
  TEST_CASE("a scrape during and after injected stalls matches the schedule; promtool is clean") {
    // Stalls of 200, 400 and 600 ms (busy) at 300, 1000 and 1800 ms.
    Host h;
    spawn_host(&h, 3200, {"300:200", "1000:400", "1800:600"});
    const uint64_t t0 = uvt::now_ns();
    // During the 600 ms stall: the endpoint answers at once, and sees it.
    usleep(2100 * 1000 - useconds_t((uvt::now_ns() - t0) / 1000));
    const uint64_t asked = uvt::now_ns();
    const std::string during = scrape(h.port);
    const double answer_ms = double(uvt::now_ns() - asked) / 1e6;
    INFO(during);
    CHECK(answer_ms < 100);
    CHECK(sample(during, "uvstall_stalls_total{loop=\"main\"}") == 3);
    CHECK(sample(during, "uvstall_loop_lag_current_seconds{loop=\"main\"}") >= 0.2);

    // After the last stall, with curl as a user would.
    usleep(2800 * 1000 - useconds_t((uvt::now_ns() - t0) / 1000));
    std::string text;
    if (have("curl")) {
      int st = 0;
      text = run_capture("curl -sS --max-time 5 http://127.0.0.1:" + std::to_string(h.port) + "/metrics", &st);
      CHECK(st == 0);
    } else {
      text = scrape(h.port);
    }
    INFO(text);
    REQUIRE(!text.empty());
    CHECK(sample(text, "uvstall_stalls_total{loop=\"main\"}") == 3);
    const double stalled = sample(text, "uvstall_stalled_seconds_total{loop=\"main\"}");
    CHECK(stalled >= 1.2 - 0.006);
    CHECK(stalled <= 1.2 + 3 * kLateMs / 1000);
    // Raw lateness: every tick but three is under 100 ms; the three late
    // ones (D - interval .. D + 30 ms) fall between the bounds around them.
    auto lag = [&](const char *le) {
      return sample(text, std::string("uvstall_loop_lag_seconds_bucket{loop=\"main\",le=\"") + le + "\"}");
    };
    const double count = sample(text, "uvstall_loop_lag_seconds_count{loop=\"main\"}");
    CHECK(count >= 100);  // ~1.6 s of ticks at 10 ms
    CHECK(count <= 200);
    CHECK(lag("+Inf") == count);
    // A loaded 2-core machine may make up to kLoadLate more ticks late past
    // 100 ms on its own (seen in CI-like runs at load 8-12); none past 250.
    const double kLoadLate = 2;
    CHECK(lag("0.1") <= count - 3);
    CHECK(lag("0.1") >= count - 3 - kLoadLate);
    CHECK(lag("0.15") <= count - 3);
    CHECK(lag("0.15") >= count - 3 - kLoadLate);
    CHECK(lag("0.25") == count - 2);
    CHECK(lag("0.5") == count - 1);
    CHECK(lag("0.75") == count);
    // Corrected: the ticks the stalls hid, 18..22 + 38..42 + 58..62.
    const double delay_count = sample(text, "uvstall_loop_delay_seconds_count{loop=\"main\"}");
    const double hidden = delay_count - count;
    CHECK(hidden >= (200 - 12) / 10 - 1 + (400 - 12) / 10 - 1 + (600 - 12) / 10 - 1);
    // (each load-late tick of up to 250 ms may hide up to 25 more)
    CHECK(hidden <= (200 + 30) / 10 + (400 + 30) / 10 + (600 + 30) / 10 + kLoadLate * 25);
    CHECK(sample(text, "uvstall_loop_idle_seconds_total{loop=\"main\"}") > 0);
    if (have("promtool")) {
      const std::string path = "/tmp/uvstall-scrape-" + std::to_string(getpid()) + ".prom";
      FILE *f = std::fopen(path.c_str(), "w");
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
      int st = 0;
      const std::string lint = run_capture("promtool check metrics < " + path + " 2>&1", &st);
      CHECK_MESSAGE(st == 0, lint);
      CHECK_MESSAGE(lint.empty(), lint);
      std::remove(path.c_str());
    } else {
      MESSAGE("promtool not installed (Debian: prometheus): exposition lint skipped");
    }
  }

  TEST_CASE("slowloris, a huge request and garbage: bounded, answered, no stall, no fd leak") {
    Host h;
    spawn_host(&h, 9000, {});
    usleep(200 * 1000);
    const size_t fds_before = fds_of(h.pid);
    // 40 clients that connect and say nothing: 16 are held until the
    // deadline, the others are closed at once.
    std::vector<int> idle;
    for (int i = 0; i < 40; ++i) {
      const int s = connect_to(h.port);
      if (s >= 0) idle.push_back(s);
    }
    usleep(100 * 1000);
    CHECK(fds_of(h.pid) <= fds_before + 16 + 1);
    for (int s : idle) close(s);  // the clients below need room
    idle.clear();
    usleep(100 * 1000);
    // Slowloris: one byte, then nothing.
    const uint64_t t0 = uvt::now_ns();
    std::vector<int> slow;
    for (int i = 0; i < 10; ++i) slow.push_back(connect_to(h.port));
    for (int s : slow) (void)!send(s, "G", 1, MSG_NOSIGNAL);
    // A huge request: 431 once 8 KiB are in, without reading the rest.
    const std::string huge = "GET /metrics HTTP/1.1\r\nX-Long: " + std::string(100000, 'a');
    const std::string r431 = http(h.port, huge);
    CHECK(r431.rfind("HTTP/1.1 431", 0) == 0);
    // Garbage (a TLS hello), another path, another method.
    const std::string r400 = http(h.port, std::string("\x16\x03\x01\x02\x00\xff\xfe garbage\r\n\r\n", 20));
    CHECK(r400.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(http(h.port, "GET /nope HTTP/1.0\r\n\r\n").rfind("HTTP/1.1 404", 0) == 0);
    CHECK(http(h.port, "POST /metrics HTTP/1.0\r\n\r\n").rfind("HTTP/1.1 405", 0) == 0);
    const std::string head = http(h.port, "HEAD /metrics HTTP/1.0\r\n\r\n");
    CHECK(head.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(head.size() == head.find("\r\n\r\n") + 4);  // headers only
    // The slow clients are cut at the deadline (the server closes: recv 0).
    for (int s : slow) {
      const std::string rest = read_all(s);
      CHECK(rest.empty());
      close(s);
    }
    const double cut_ms = double(uvt::now_ns() - t0) / 1e6;
    CHECK(cut_ms >= 4000);
    CHECK(cut_ms <= 5000 + 2000);
    usleep(200 * 1000);
    const std::string text = scrape(h.port);
    INFO(text);
    // The watched loop never noticed: no stall, every tick within 50 ms
    // (but for at most 3 that a loaded machine delays on its own: seen once
    // at load 8-12 with one tick of 730).
    CHECK(sample(text, "uvstall_stalls_total{loop=\"main\"}") == 0);
    CHECK(sample(text, "uvstall_loop_lag_seconds_bucket{loop=\"main\",le=\"0.05\"}") >=
          sample(text, "uvstall_loop_lag_seconds_count{loop=\"main\"}") - 3);
    usleep(100 * 1000);
    CHECK(fds_of(h.pid) == fds_before);
  }

  TEST_CASE("metrics_file: written atomically with the same series") {
    const std::string dir = "/tmp/uvstall-mf-" + std::to_string(getpid());
    mkdir(dir.c_str(), 0755);
    Host h;
    spawn_host(&h, 2000, {"200:300"}, dir + "/uvstall.prom");
    usleep(1700 * 1000);
    std::ifstream in(dir + "/uvstall.prom");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = "\n" + ss.str();
    INFO(text);
    CHECK(sample(text, "uvstall_stalls_total{loop=\"main\"}") == 1);
    CHECK(text.find("# TYPE uvstall_loop_lag_seconds histogram") != std::string::npos);
    // Only the target is left (temporary files are renamed away).
    size_t files = 0;
    DIR *d = opendir(dir.c_str());
    while (dirent *e = readdir(d)) files += e->d_name[0] != '.';
    closedir(d);
    CHECK(files == 1);
    std::system(("rm -rf " + dir).c_str());
  }
}
