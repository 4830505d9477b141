// Which loaded object an address belongs to: module path, load bias, GNU
// build-id and the nearest symbol. Used by the sentinel only, never in the
// signal handler. During a stall it takes no loader lock: the table is built
// with dl_iterate_phdr at uvstall_start (on the starting thread) and, for an
// address it does not know, refreshed from /proc/self/maps; symbols come
// from the module's file on disk (.symtab, else .dynsym), used only when the
// file's build-id matches the loaded one.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace uvstall::internal {

struct SymbolTable;

struct Module {
  std::string path;       // absolute path; "[vdso]" for the vDSO
  uintptr_t bias = 0;     // runtime address = bias + ELF virtual address
  std::string build_id;   // lower-case hex; empty when the object has none
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;  // [begin, end) mapped
  bool symbols_tried = false;
  std::shared_ptr<const SymbolTable> symbols;  // null: none, or build-id mismatch
};

// What the report says about one frame.
struct ResolvedFrame {
  uintptr_t pc = 0;
  std::shared_ptr<const Module> module;  // null: no ELF object (JIT, anonymous memory)
  uintptr_t offset = 0;            // pc - bias
  std::string symbol;              // demangled; empty when unknown
  uint64_t symbol_offset = 0;
};

class ModuleTable {
 public:
  // Re-reads the loaded objects with dl_iterate_phdr. Takes the loader lock:
  // call it at start, never from the sentinel during a stall.
  void refresh_from_loader();
  // Resolves one frame. `return_address` frames are looked up at pc - 1 (a
  // call's return address may be the first byte of the next function).
  ResolvedFrame resolve(uintptr_t pc, bool return_address);

  // Parsing helpers, exposed for tests.
  static std::string read_build_id_from_file(const std::string &path);

 private:
  std::shared_ptr<Module> find_locked(uintptr_t addr);
  void refresh_from_maps_locked();
  void load_symbols_locked(Module *m);

  friend void modules_fork_prepare();
  friend void modules_fork_parent();
  friend void modules_fork_child();
  std::mutex mu_;
  std::vector<std::shared_ptr<Module>> modules_;
  // Pages a maps refresh found in no module (JIT code, anonymous memory):
  // not worth another refresh. Cleared when it grows past a bound and at
  // each refresh from the loader.
  std::unordered_set<uintptr_t> no_module_pages_;
};

// The process-wide table.
ModuleTable &modules();

// Hex of the bytes.
std::string to_hex(const unsigned char *p, size_t n);

}  // namespace uvstall::internal
