// The metrics endpoint and textfile (see metrics_http.h).
//
// Runs on its own thread (every signal blocked, see threads.h) with its own
// uv_loop_t. It only reads the watches' atomics and histograms (metrics.cc);
// the one lock it takes that a loop thread also takes is a watch's mu, which
// a loop thread holds only in uvstall_start and uvstall_stop, never per tick.
//
// A hostile client cannot hurt a watched loop (nothing here runs there) nor
// this thread for long: at most kMetricsMaxConnections at once (more are
// closed at accept), requests of at most kMetricsMaxRequestBytes (431 and
// close), and one deadline of kMetricsTimeoutMs for the whole exchange
// (slowloris and clients that never read the answer are closed). Each
// connection owns a fixed buffer and its answer; both are freed at close.
#include "metrics_http.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "fork.h"
#include "metrics.h"
#include "threads.h"

namespace uvstall::internal {
namespace {

// libuv's own functions for the loop calls preload mode interposes
// (uv_loop_init, uv_run, uv_loop_close): the shim's would take this loop for
// the host's (and its uv_loop_init runs under the lock held while it starts
// us). Found in libuv.so.1 itself; the global ones when it is not loaded
// under that name.
template <typename Fn>
Fn libuv_own(const char *name, Fn fallback) {
  if (void *lib = dlopen("libuv.so.1", RTLD_LAZY | RTLD_NOLOAD)) {
    if (void *f = dlsym(lib, name)) return reinterpret_cast<Fn>(f);
  }
  return fallback;
}
int loop_init(uv_loop_t *loop) { return libuv_own("uv_loop_init", &uv_loop_init)(loop); }
int loop_close(uv_loop_t *loop) { return libuv_own("uv_loop_close", &uv_loop_close)(loop); }
int run_loop(uv_loop_t *loop) { return libuv_own("uv_run", &uv_run)(loop, UV_RUN_DEFAULT); }

struct Server {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_timer_t file_timer;
  std::string file;
  int active = 0;
  bool listening = false;  // listener is open (set before the thread starts)
};
Server *g_server = nullptr;  // never destroyed: the thread runs until exit

struct Conn {
  uv_tcp_t tcp;
  uv_timer_t deadline;
  int open_handles = 0;
  size_t len = 0;
  bool answered = false;
  std::string answer;
  uv_write_t wr;
  char buf[kMetricsMaxRequestBytes];
};

void conn_closed(uv_handle_t *h) {
  auto *c = static_cast<Conn *>(h->data);
  if (--c->open_handles == 0) {
    g_server->active--;
    delete c;
  }
}

void conn_close(Conn *c) {
  for (uv_handle_t *h : {reinterpret_cast<uv_handle_t *>(&c->tcp),
                         reinterpret_cast<uv_handle_t *>(&c->deadline)})
    if (!uv_is_closing(h)) uv_close(h, conn_closed);
}

void on_written(uv_write_t *req, int) { conn_close(static_cast<Conn *>(req->data)); }

void answer(Conn *c, const char *status, const char *type, const std::string &body,
            bool head_only = false) {
  if (c->answered) return;
  c->answered = true;
  uv_read_stop(reinterpret_cast<uv_stream_t *>(&c->tcp));
  c->answer = std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
              "\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\nConnection: close\r\n\r\n" + (head_only ? std::string() : body);
  uv_buf_t b = uv_buf_init(c->answer.data(), unsigned(c->answer.size()));
  c->wr.data = c;
  if (uv_write(&c->wr, reinterpret_cast<uv_stream_t *>(&c->tcp), &b, 1, on_written) != 0)
    conn_close(c);
}

// The request line decides; headers are read (and bounded) but ignored.
void handle_request(Conn *c) {
  const std::string head(c->buf, c->len);
  const size_t eol = head.find_first_of("\r\n");
  const std::string line = head.substr(0, eol);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || line.compare(sp2 + 1, 5, "HTTP/") != 0) {
    answer(c, "400 Bad Request", "text/plain", "bad request\n");
    return;
  }
  const std::string method = line.substr(0, sp1);
  std::string path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));
  if (method != "GET" && method != "HEAD") {
    answer(c, "405 Method Not Allowed", "text/plain", "only GET\n");
  } else if (path == "/metrics") {
    std::string body = prometheus_text(expose_all());
    answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, method == "HEAD");
  } else if (path == "/") {
    answer(c, "200 OK", "text/plain", "uvstall: metrics at /metrics\n");
  } else {
    answer(c, "404 Not Found", "text/plain", "not found: try /metrics\n");
  }
}

void on_alloc(uv_handle_t *h, size_t, uv_buf_t *b) {
  auto *c = static_cast<Conn *>(h->data);
  *b = uv_buf_init(c->buf + c->len, unsigned(sizeof c->buf - c->len));
}

void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *) {
  auto *c = static_cast<Conn *>(s->data);
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0 || c->answered) return;
  const size_t before = c->len;
  c->len += size_t(n);
  // Look for the end of the headers in what is new (and the 3 bytes before).
  const size_t from = before >= 3 ? before - 3 : 0;
  for (size_t i = from; i + 1 < c->len; ++i) {
    if ((c->buf[i] == '\n' && c->buf[i + 1] == '\n') ||
        (i + 3 < c->len && std::memcmp(c->buf + i, "\r\n\r\n", 4) == 0)) {
      handle_request(c);
      return;
    }
  }
  if (c->len == sizeof c->buf)
    answer(c, "431 Request Header Fields Too Large", "text/plain", "request too large\n");
}

void on_deadline(uv_timer_t *t) { conn_close(static_cast<Conn *>(t->data)); }

void on_connection(uv_stream_t *listener, int status) {
  if (status != 0) return;
  auto *c = new (std::nothrow) Conn;
  if (c == nullptr) return;
  c->tcp.data = c;
  c->deadline.data = c;
  uv_tcp_init(&g_server->loop, &c->tcp);
  c->open_handles = 1;
  g_server->active++;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t *>(&c->tcp)) != 0 ||
      g_server->active > kMetricsMaxConnections) {
    uv_close(reinterpret_cast<uv_handle_t *>(&c->tcp), conn_closed);
    return;
  }
  uv_timer_init(&g_server->loop, &c->deadline);
  c->open_handles = 2;
  uv_timer_start(&c->deadline, on_deadline, kMetricsTimeoutMs, 0);
  if (uv_read_start(reinterpret_cast<uv_stream_t *>(&c->tcp), on_alloc, on_read) != 0)
    conn_close(c);
}

// The textfile: written to a temporary file in the same directory, then
// renamed over the target, so a collector never reads half a file. Never
// over something that is not a regular file (checked at configure too; a
// pipe or device may appear there later).
void write_file(uv_timer_t *) {
  struct stat st;
  if (stat(g_server->file.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return;
  const std::string text = prometheus_text(expose_all());
  const std::string tmp = g_server->file + ".tmp" + std::to_string(getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = write(fd, text.data() + off, text.size() - off);
    if (n <= 0) break;
    off += size_t(n);
  }
  const bool ok = off == text.size() && close(fd) == 0;
  if (!ok || rename(tmp.c_str(), g_server->file.c_str()) != 0) unlink(tmp.c_str());
}

void server_main() { run_loop(&g_server->loop); }

}  // namespace

// fork (src/fork.cc): the endpoint stays the parent's. The child closes its
// copies of the listening socket and the loop's epoll descriptor (a child
// that outlives its parent must not keep the port bound with nobody
// answering), and serves nothing. Only fields set before the server thread
// started are read: the child's copy of the loop may be mid-update.
void metrics_server_fork_child() {
  if (g_server == nullptr) return;
  if (g_server->listening) {
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t *>(&g_server->listener), &fd) == 0) close(fd);
  }
  close(uv_backend_fd(&g_server->loop));
  g_server = nullptr;
}

int metrics_server_start(const ProcessConfig &p) {
  if (p.metrics_host.empty() && p.metrics_file.empty()) return 0;
  auto *s = new (std::nothrow) Server;
  if (s == nullptr) return UVSTALL_ENOMEM;
  if (loop_init(&s->loop) != 0) {
    delete s;
    return UVSTALL_EUV;
  }
  if (!p.metrics_host.empty()) {
    sockaddr_storage addr;
    if (uv_ip4_addr(p.metrics_host.c_str(), p.metrics_port,
                    reinterpret_cast<sockaddr_in *>(&addr)) != 0 &&
        uv_ip6_addr(p.metrics_host.c_str(), p.metrics_port,
                    reinterpret_cast<sockaddr_in6 *>(&addr)) != 0) {
      loop_close(&s->loop);
      delete s;
      return UVSTALL_EMETRICSADDR;
    }
    uv_tcp_init(&s->loop, &s->listener);
    if (uv_tcp_bind(&s->listener, reinterpret_cast<sockaddr *>(&addr), 0) != 0 ||
        uv_listen(reinterpret_cast<uv_stream_t *>(&s->listener), kMetricsMaxConnections,
                  on_connection) != 0) {
      uv_close(reinterpret_cast<uv_handle_t *>(&s->listener), nullptr);
      run_loop(&s->loop);
      loop_close(&s->loop);
      delete s;
      return UVSTALL_EMETRICSBIND;
    }
    s->listening = true;
  }
  g_server = s;
  if (!p.metrics_file.empty()) {
    s->file = p.metrics_file;
    uv_timer_init(&s->loop, &s->file_timer);
    uv_timer_start(&s->file_timer, write_file, 0, kMetricsFileEveryMs);
  }
  if (!start_quiet_thread(server_main)) return UVSTALL_ETHREAD;
  return 0;
}

}  // namespace uvstall::internal
