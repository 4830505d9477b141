/* tools/pylayout.c: prints one row of src/python_layouts.inc, the offsets
 * of every CPython field the no-fault reader (src/python_reader.cc) reads,
 * taken from the headers of the CPython this is compiled against.
 *
 *   cc -DPy_BUILD_CORE -I PREFIX/include/python3.X tools/pylayout.c -o pylayout
 *   ./pylayout        # one C++ initializer row, for python_layouts.inc
 *
 * Only the headers are used (nothing is linked, nothing is run from
 * libpython), so the row describes the build the headers come from: a
 * release build on x86-64 / aarch64 Linux. test/python/layouts_test.py
 * regenerates every row on a machine that has the headers and compares
 * it with the committed table. Field order is PyLayout's (src/python_reader.h).
 */
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if PY_VERSION_HEX < 0x03080000 || PY_VERSION_HEX >= 0x030E0000
#error "pylayout knows CPython 3.8 to 3.13"
#endif

#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#include "internal/pycore_code.h"
#else
#include "frameobject.h"
#endif

/* Bit position of the lowest set bit of the unicode state word after
 * setting one bitfield to all ones (the compiler's bitfield layout, not a
 * guess). */
#define STATE_SHIFT(field, ones)                                   \
  do {                                                             \
    PyASCIIObject o;                                               \
    unsigned int w = 0;                                            \
    memset(&o, 0, sizeof o);                                       \
    o.state.field = (ones);                                        \
    memcpy(&w, &o.state, sizeof w);                                \
    shift = 0;                                                     \
    while (shift < 32 && !(w & (1u << shift))) ++shift;            \
  } while (0)

int main(void) {
  int shift;
  int kind_shift, compact_bit, ascii_bit;
  STATE_SHIFT(kind, 7);
  kind_shift = shift;
  STATE_SHIFT(compact, 1);
  compact_bit = shift;
  STATE_SHIFT(ascii, 1);
  ascii_bit = shift;

  printf("    {%d, %d, ", PY_MAJOR_VERSION, PY_MINOR_VERSION);
#if PY_VERSION_HEX >= 0x030D0000
  printf("kCurrentFrame, %zu, %zu, %zu, %zu, 0, ",
         offsetof(PyThreadState, interp), offsetof(PyThreadState, thread_id),
         offsetof(PyThreadState, current_frame), sizeof(PyThreadState));
  printf("%zu, %zu, %zu, %zu, %zu, %d, ", sizeof(_PyInterpreterFrame),
         offsetof(_PyInterpreterFrame, previous), offsetof(_PyInterpreterFrame, f_executable),
         offsetof(_PyInterpreterFrame, instr_ptr), offsetof(_PyInterpreterFrame, owner),
         (int)FRAME_OWNED_BY_CSTACK);
#elif PY_VERSION_HEX >= 0x030B0000
  printf("kCFrame, %zu, %zu, %zu, %zu, %zu, ",
         offsetof(PyThreadState, interp), offsetof(PyThreadState, thread_id),
         offsetof(PyThreadState, cframe), sizeof(PyThreadState),
         offsetof(_PyCFrame, current_frame));
  printf("%zu, %zu, %zu, %zu, %zu, %d, ", sizeof(_PyInterpreterFrame),
         offsetof(_PyInterpreterFrame, previous), offsetof(_PyInterpreterFrame, f_code),
         offsetof(_PyInterpreterFrame, prev_instr), offsetof(_PyInterpreterFrame, owner),
#if PY_VERSION_HEX >= 0x030C0000
         (int)FRAME_OWNED_BY_CSTACK
#else
         -1 /* 3.11 has no frames owned by the C stack */
#endif
  );
#else
  printf("kFrameObject, %zu, %zu, %zu, %zu, 0, ",
         offsetof(PyThreadState, interp), offsetof(PyThreadState, thread_id),
         offsetof(PyThreadState, frame), sizeof(PyThreadState));
  printf("%zu, %zu, %zu, %zu, 0, -1, ", sizeof(PyFrameObject),
         offsetof(PyFrameObject, f_back), offsetof(PyFrameObject, f_code),
         offsetof(PyFrameObject, f_lasti));
#endif

#if PY_VERSION_HEX >= 0x030B0000
  printf("%zu, %zu, %zu, %zu, %zu, %zu, %zu, kLocations, ", offsetof(PyCodeObject, co_code_adaptive),
         offsetof(PyCodeObject, co_filename), offsetof(PyCodeObject, co_name),
         offsetof(PyCodeObject, co_qualname), offsetof(PyCodeObject, co_firstlineno),
         offsetof(PyCodeObject, co_linetable), offsetof(PyCodeObject, co_code_adaptive));
#elif PY_VERSION_HEX >= 0x030A0000
  printf("%zu, %zu, %zu, 0, %zu, %zu, 0, kLinetable310, ", sizeof(PyCodeObject),
         offsetof(PyCodeObject, co_filename), offsetof(PyCodeObject, co_name),
         offsetof(PyCodeObject, co_firstlineno), offsetof(PyCodeObject, co_linetable));
#else
  printf("%zu, %zu, %zu, 0, %zu, %zu, 0, kLnotab, ", sizeof(PyCodeObject),
         offsetof(PyCodeObject, co_filename), offsetof(PyCodeObject, co_name),
         offsetof(PyCodeObject, co_firstlineno), offsetof(PyCodeObject, co_lnotab));
#endif
  printf("%zu, %zu, %zu, ", offsetof(PyObject, ob_type), offsetof(PyVarObject, ob_size),
         offsetof(PyBytesObject, ob_sval));
  printf("%zu, %zu, %zu, %zu, %d, %d, %d},\n", offsetof(PyASCIIObject, length),
         offsetof(PyASCIIObject, state), sizeof(PyASCIIObject), sizeof(PyCompactUnicodeObject),
         kind_shift, compact_bit, ascii_bit);
  return 0;
}
