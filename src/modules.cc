// Module table and ELF reading for the sentinel (see modules.h). ELF files
// are read with pread into buffers (never mmap'ed: a file truncated under us
// would raise SIGBUS in the sentinel); 64-bit ELF only.
#include "modules.h"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "fork.h"


namespace uvstall::internal {

struct SymbolTable {
  struct Sym {
    uintptr_t addr;  // ELF virtual address
    uint64_t size;
    std::string name;
  };
  std::vector<Sym> syms;  // sorted by addr
};

std::string to_hex(const unsigned char *p, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    s += kHex[p[i] >> 4];
    s += kHex[p[i] & 15];
  }
  return s;
}

namespace {

// Finds NT_GNU_BUILD_ID in a buffer of ELF notes.
std::string build_id_from_notes(const unsigned char *p, size_t len) {
  size_t off = 0;
  while (off + sizeof(Elf64_Nhdr) <= len) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, p + off, sizeof nh);
    off += sizeof nh;
    const size_t name_sz = (nh.n_namesz + 3) & ~size_t(3);
    const size_t desc_sz = (nh.n_descsz + 3) & ~size_t(3);
    if (off + name_sz + nh.n_descsz > len) break;
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
        std::memcmp(p + off, "GNU", 4) == 0) {
      return to_hex(p + off + name_sz, nh.n_descsz);
    }
    off += name_sz + desc_sz;
  }
  return {};
}

bool pread_all(int fd, void *buf, size_t len, uint64_t off) {
  auto *p = static_cast<char *>(buf);
  while (len > 0) {
    ssize_t n = pread(fd, p, len, off_t(off));
    if (n <= 0) return false;
    p += n;
    len -= size_t(n);
    off += uint64_t(n);
  }
  return true;
}

// An open ELF file with its headers read; everything else on demand.
struct ElfFile {
  int fd = -1;
  Elf64_Ehdr eh{};
  std::vector<Elf64_Phdr> phdrs;
  std::vector<Elf64_Shdr> shdrs;

  ~ElfFile() {
    if (fd >= 0) close(fd);
  }
  bool open(const std::string &path) {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    if (!pread_all(fd, &eh, sizeof eh, 0)) return false;
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
      return false;
    if (eh.e_phnum > 4096) return false;
    phdrs.resize(eh.e_phnum);
    if (eh.e_phnum && !pread_all(fd, phdrs.data(), eh.e_phnum * sizeof(Elf64_Phdr), eh.e_phoff))
      return false;
    if (eh.e_shentsize == sizeof(Elf64_Shdr) && eh.e_shnum > 0) {
      shdrs.resize(eh.e_shnum);
      if (!pread_all(fd, shdrs.data(), eh.e_shnum * sizeof(Elf64_Shdr), eh.e_shoff))
        shdrs.clear();
    }
    return true;
  }
  bool read(std::vector<unsigned char> *out, uint64_t off, uint64_t len, uint64_t cap) {
    if (len > cap) return false;
    out->resize(len);
    return len == 0 || pread_all(fd, out->data(), len, off);
  }
  std::string build_id() {
    std::vector<unsigned char> buf;
    for (const auto &ph : phdrs) {
      if (ph.p_type != PT_NOTE || !read(&buf, ph.p_offset, ph.p_filesz, 1 << 20)) continue;
      std::string id = build_id_from_notes(buf.data(), buf.size());
      if (!id.empty()) return id;
    }
    return {};
  }
  // The lowest PT_LOAD address, page-aligned: where offset 0 is mapped.
  uintptr_t first_load_vaddr() const {
    for (const auto &ph : phdrs)
      if (ph.p_type == PT_LOAD) return uintptr_t(ph.p_vaddr - ph.p_offset);
    return 0;
  }
};

std::string demangle(const char *name) {
  int status = 0;
  char *d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status == 0 && d != nullptr) {
    std::string s(d);
    std::free(d);
    return s;
  }
  return name;
}

std::shared_ptr<const SymbolTable> read_symbols(ElfFile &f) {
  // Prefer the full symbol table; fall back to the dynamic one.
  const Elf64_Shdr *tab = nullptr;
  for (unsigned want : {unsigned(SHT_SYMTAB), unsigned(SHT_DYNSYM)}) {
    for (const auto &sh : f.shdrs)
      if (sh.sh_type == want) tab = &sh;
    if (tab != nullptr) break;
  }
  if (tab == nullptr || tab->sh_link >= f.shdrs.size() ||
      tab->sh_entsize != sizeof(Elf64_Sym))
    return nullptr;
  const Elf64_Shdr &strsh = f.shdrs[tab->sh_link];
  std::vector<unsigned char> symbuf, strbuf;
  constexpr uint64_t kCap = 256u << 20;
  if (!f.read(&symbuf, tab->sh_offset, tab->sh_size, kCap) ||
      !f.read(&strbuf, strsh.sh_offset, strsh.sh_size, kCap))
    return nullptr;
  auto table = std::make_shared<SymbolTable>();
  const size_t n = symbuf.size() / sizeof(Elf64_Sym);
  for (size_t i = 0; i < n; ++i) {
    Elf64_Sym s;
    std::memcpy(&s, symbuf.data() + i * sizeof s, sizeof s);
    const int type = ELF64_ST_TYPE(s.st_info);
    if ((type != STT_FUNC && type != STT_GNU_IFUNC) || s.st_shndx == SHN_UNDEF ||
        s.st_value == 0 || s.st_name >= strbuf.size())
      continue;
    const char *name = reinterpret_cast<const char *>(strbuf.data()) + s.st_name;
    if (std::memchr(name, 0, strbuf.size() - s.st_name) == nullptr) continue;
    table->syms.push_back({uintptr_t(s.st_value), s.st_size, demangle(name)});
  }
  std::sort(table->syms.begin(), table->syms.end(),
            [](const auto &a, const auto &b) { return a.addr < b.addr; });
  return table;
}

std::string main_executable_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = 0;
  return buf;
}

int collect_loaded(struct dl_phdr_info *info, size_t, void *arg) {
  auto *out = static_cast<std::vector<std::shared_ptr<Module>> *>(arg);
  auto m = std::make_shared<Module>();
  const char *name = info->dlpi_name;
  if (name == nullptr || name[0] == '\0') {
    m->path = main_executable_path();
  } else if (std::strstr(name, "linux-vdso") != nullptr ||
             std::strstr(name, "linux-gate") != nullptr) {
    m->path = "[vdso]";
  } else {
    m->path = name;
  }
  m->bias = uintptr_t(info->dlpi_addr);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr) &ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD) {
      uintptr_t b = m->bias + ph.p_vaddr;
      m->ranges.emplace_back(b, b + ph.p_memsz);
    } else if (ph.p_type == PT_NOTE && m->build_id.empty()) {
      // Mapped memory of a loaded object, read under the loader lock.
      m->build_id = build_id_from_notes(
          reinterpret_cast<const unsigned char *>(m->bias + ph.p_vaddr), ph.p_memsz);
    }
  }
  if (!m->ranges.empty()) out->push_back(std::move(m));
  return 0;
}

}  // namespace

std::string ModuleTable::read_build_id_from_file(const std::string &path) {
  ElfFile f;
  if (!f.open(path)) return {};
  return f.build_id();
}

ModuleTable &modules() {
  static ModuleTable *table = new ModuleTable;  // never destroyed: exit-safe
  return *table;
}

namespace {

// Keeps symbol tables already read for modules that are still loaded.
void carry_over(std::vector<std::shared_ptr<Module>> &fresh,
                const std::vector<std::shared_ptr<Module>> &old) {
  for (auto &m : fresh) {
    for (const auto &o : old) {
      if (o->path == m->path && o->bias == m->bias && o->build_id == m->build_id) {
        m->symbols_tried = o->symbols_tried;
        m->symbols = o->symbols;
        break;
      }
    }
  }
}

}  // namespace

// fork (src/fork.cc): the table's lock is not held across fork.
void modules_fork_prepare() { modules().mu_.lock(); }
void modules_fork_parent() { modules().mu_.unlock(); }
void modules_fork_child() { modules().mu_.unlock(); }

void ModuleTable::refresh_from_loader() {
  std::vector<std::shared_ptr<Module>> fresh;
  dl_iterate_phdr(collect_loaded, &fresh);
  std::lock_guard<std::mutex> lock(mu_);
  carry_over(fresh, modules_);
  modules_ = std::move(fresh);
  no_module_pages_.clear();
}

void ModuleTable::refresh_from_maps_locked() {
  std::ifstream in("/proc/self/maps");
  if (!in) return;
  std::vector<std::shared_ptr<Module>> fresh;
  std::string line;
  while (std::getline(in, line)) {
    unsigned long begin = 0, end = 0, offset = 0;
    char perms[8] = {};
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %*s %*s %n", &begin, &end, perms,
                    &offset, &path_at) < 4 || path_at <= 0)
      continue;
    std::string path = line.substr(size_t(path_at));
    if (path.empty() || (path[0] != '/' && path != "[vdso]")) continue;
    Module *m = nullptr;
    for (auto &f : fresh)
      if (f->path == path) m = f.get();
    if (m == nullptr) {
      if (offset != 0 && path != "[vdso]") continue;  // must see the ELF header first
      auto nm = std::make_shared<Module>();
      nm->path = path;
      if (path == "[vdso]") {
        nm->bias = begin;
      } else {
        ElfFile f;
        if (!f.open(path)) continue;
        nm->bias = begin - f.first_load_vaddr();
        nm->build_id = f.build_id();
      }
      m = nm.get();
      fresh.push_back(std::move(nm));
    }
    m->ranges.emplace_back(begin, end);
  }
  carry_over(fresh, modules_);
  modules_ = std::move(fresh);
}

std::shared_ptr<Module> ModuleTable::find_locked(uintptr_t addr) {
  constexpr uintptr_t kPage = 4096;
  constexpr size_t kMaxNoModulePages = 4096;
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (auto &m : modules_)
      for (const auto &r : m->ranges)
        if (addr >= r.first && addr < r.second) return m;
    // Unknown address: something may have been loaded since the last
    // refresh. Re-read /proc/self/maps (no loader lock), once per page
    // that turns out to be in no module.
    const uintptr_t page = addr / kPage;
    if (attempt > 0 || no_module_pages_.count(page) != 0) break;
    refresh_from_maps_locked();
    if (no_module_pages_.size() >= kMaxNoModulePages) no_module_pages_.clear();
    no_module_pages_.insert(page);
  }
  return nullptr;
}

void ModuleTable::load_symbols_locked(Module *m) {
  m->symbols_tried = true;
  if (m->path.empty() || m->path[0] != '/') return;
  ElfFile f;
  if (!f.open(m->path)) return;
  // A file replaced on disk (an upgrade) must not name the old code.
  if (f.build_id() != m->build_id) return;
  m->symbols = read_symbols(f);
}

ResolvedFrame ModuleTable::resolve(uintptr_t pc, bool return_address) {
  ResolvedFrame r;
  r.pc = pc;
  const uintptr_t lookup = return_address && pc > 0 ? pc - 1 : pc;
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<Module> m = find_locked(lookup);
  if (m == nullptr) return r;
  r.module = m;
  r.offset = pc - m->bias;
  if (!m->symbols_tried) load_symbols_locked(m.get());
  if (m->symbols == nullptr) return r;
  const auto &syms = m->symbols->syms;
  const uintptr_t vaddr = lookup - m->bias;
  auto it = std::upper_bound(syms.begin(), syms.end(), vaddr,
                             [](uintptr_t a, const SymbolTable::Sym &s) { return a < s.addr; });
  if (it == syms.begin()) return r;
  --it;
  // Past the end of a sized symbol is some other, unnamed code: say nothing.
  if (it->size != 0 && vaddr >= it->addr + it->size) return r;
  r.symbol = it->name;
  r.symbol_offset = pc - m->bias - it->addr;
  return r;
}

}  // namespace uvstall::internal
