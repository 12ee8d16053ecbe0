/* TEST HARNESS ONLY (issue 22): Rust's std for Windows imports ProcessPrng
 * from bcryptprimitives.dll, which Wine 8.0 lacks. This DLL, placed next to
 * the .exe under test, provides it on top of advapi32's SystemFunction036
 * (RtlGenRandom). Never shipped: packaging/windows does not include it and
 * real Windows (10 and later) has the real one. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
