// Stall fingerprints (see fingerprint.h).
#include "fingerprint.h"

#include <cstdio>
#include <sstream>

#include "skip_modules.h"

namespace uvstall::internal {

bool skip_glob_match(const char *p, const char *s) {
  // Iterative glob with backtracking to the last '*'.
  const char *star = nullptr, *resume = nullptr;
  while (*s) {
    if (*p == '*') {
      star = p++;
      resume = s;
    } else if (*p == '?' || *p == *s) {
      ++p;
      ++s;
    } else if (star) {
      p = star + 1;
      s = ++resume;
    } else {
      return false;
    }
  }
  while (*p == '*') ++p;
  return *p == '\0';
}

namespace {

std::vector<std::string> parse_skip_list() {
  std::vector<std::string> out;
  std::istringstream in(kSkipModulesText);
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    const size_t e = line.find_last_not_of(" \t\r");
    out.push_back(line.substr(b, e - b + 1));
  }
  return out;
}

// Parsed when the library is loaded, before any thread of ours exists: a
// function-local static first reached by the sentinel could be mid-way
// through its initialization when the host forks, and the child's sentinel
// would wait on its guard forever (seen in the fork test under ASan).
const std::vector<std::string> *const g_skip_list = new std::vector<std::string>(parse_skip_list());

const std::vector<std::string> &skip_list() { return *g_skip_list; }

// FNV-1a, 64 bits.
struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void add(const std::string &s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;  // separator
    h *= 1099511628211ull;
  }
};

}  // namespace

bool module_is_skipped(const std::string &path) {
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  for (const auto &pattern : skip_list())
    if (skip_glob_match(pattern.c_str(), base.c_str())) return true;
  return false;
}

std::string stall_fingerprint(const std::vector<ResolvedFrame> &frames,
                              const nlohmann::ordered_json &lang_frames) {
  Fnv f;
  int parts = 0;
  if (lang_frames.is_array()) {
    for (const auto &lf : lang_frames) {
      f.add(lf.value("file", "") + ":" + lf.value("function", ""));
      ++parts;
    }
  }
  for (const auto &fr : frames) {
    if (fr.module == nullptr || module_is_skipped(fr.module->path)) continue;
    const size_t slash = fr.module->path.rfind('/');
    std::string key = fr.module->path.substr(slash == std::string::npos ? 0 : slash + 1);
    // The function's start when known: the same for every pc inside it.
    const uintptr_t at = fr.symbol.empty() ? fr.offset : fr.offset - fr.symbol_offset;
    char buf[32];
    std::snprintf(buf, sizeof buf, "+%llx", static_cast<unsigned long long>(at));
    f.add(key + buf);
    ++parts;
  }
  if (parts == 0) return {};
  char out[24];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(f.h));
  return out;
}

}  // namespace uvstall::internal
