"""Python side of uvstall: reading stall reports and naming their culprits.

Used by tools/symbolize (installed as uvstall-symbolize) and by
tools/uvstall-report, so that both read reports, skip modules and blame
code the same way. Standard library only.

  reports     JSON Lines records, validated, with their input line numbers
  skiplist    tools/skip-modules.txt: modules never blamed for a stall
  elf         build-id and "has DWARF?" of an ELF file
  locate      finding a module's debug file by build-id (dirs, debuginfod)
  symbolizer  llvm-symbolizer / addr2line, batched per file
  stacks      symbolized frames and the choice of a stall's culprit
  render      text, JSON Lines, summary and folded output
  report_*    uvstall-report: the page's data (report_model), its assembly
              (report_page, with report_page.html/.css/.js) and command line
"""
