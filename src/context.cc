// Application context slots (see ContextSlot in watch.h) and
// uvstall_set_context.
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "handle.h"

namespace uvstall::internal {

namespace {

void publish_entry(ContextSlot *c, int i) {
  constexpr int kEntryWords = ContextSlot::kEntryBytes / 8;
  const uint32_t seq = c->seq.load(std::memory_order_relaxed);
  c->seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  for (int k = 0; k < kEntryWords; ++k) {
    uint64_t word;
    std::memcpy(&word, c->plain[i] + k * 8, 8);
    c->words[i * kEntryWords + k].store(word, std::memory_order_relaxed);
  }
  c->seq.store(seq + 2, std::memory_order_release);
}

}  // namespace

int context_set(ContextSlot *c, const char *key, const char *value) {
  if (key == nullptr) return UVSTALL_EINVAL;
  const size_t klen = std::strlen(key);
  if (klen == 0 || klen >= size_t(kContextKeyBytes)) return UVSTALL_ECONTEXT;
  int slot = -1, free_slot = -1;
  for (int i = 0; i < kContextKeys; ++i) {
    if (c->plain[i][0] == '\0') {
      if (free_slot < 0) free_slot = i;
    } else if (std::strcmp(c->plain[i], key) == 0) {
      slot = i;
    }
  }
  if (value == nullptr) {  // remove
    if (slot < 0) return 0;
    std::memset(c->plain[slot], 0, ContextSlot::kEntryBytes);
    publish_entry(c, slot);
    return 0;
  }
  if (slot < 0) slot = free_slot;
  if (slot < 0) return UVSTALL_ECONTEXT;
  std::memset(c->plain[slot], 0, ContextSlot::kEntryBytes);
  std::memcpy(c->plain[slot], key, klen);
  // Values are truncated to fit (documented): 127 bytes.
  const size_t vlen = std::min(std::strlen(value), size_t(kContextValueBytes - 1));
  std::memcpy(c->plain[slot] + kContextKeyBytes, value, vlen);
  publish_entry(c, slot);
  return 0;
}

nlohmann::ordered_json context_read(const ContextSlot *c) {
  char copy[ContextSlot::kWords * 8];
  for (int attempt = 0; attempt < 4; ++attempt) {
    const uint32_t s1 = c->seq.load(std::memory_order_acquire);
    if (s1 & 1) continue;
    for (int k = 0; k < ContextSlot::kWords; ++k) {
      const uint64_t word = c->words[k].load(std::memory_order_relaxed);
      std::memcpy(copy + k * 8, &word, 8);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (c->seq.load(std::memory_order_relaxed) != s1) continue;
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (int i = 0; i < kContextKeys; ++i) {
      const char *entry = copy + i * ContextSlot::kEntryBytes;
      if (entry[0] == '\0') continue;
      out[std::string(entry, strnlen(entry, kContextKeyBytes))] =
          std::string(entry + kContextKeyBytes,
                      strnlen(entry + kContextKeyBytes, kContextValueBytes));
    }
    return out.empty() ? nlohmann::ordered_json() : out;
  }
  return nullptr;  // the loop kept writing: not stalled after all
}

}  // namespace uvstall::internal

extern "C" int uvstall_set_context(uvstall_t *h, const char *key, const char *value) {
  using namespace uvstall::internal;
  if (h == nullptr) return UVSTALL_EINVAL;
  // The thread's id, cached: no system call per call.
  static thread_local const pid_t tid = pid_t(syscall(SYS_gettid));
  if (tid != h->watch->who.tid) return UVSTALL_EWRONGTHREAD;
  return context_set(&h->watch->context, key, value);
}
