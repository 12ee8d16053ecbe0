/* A Windows program that holds a file open for writing (issue 22, test
 * harness only: tests/tests/windows_files.rs): creates <path> sharing it
 * with readers only, writes "part1", waits <ms>, writes "part2", waits
 * <ms>, closes. The agent must hash the file once, after the close (its
 * deny-write probe fails while this holds the file). */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

static int put(HANDLE h, const char *s) {
    DWORD n = 0;
    return WriteFile(h, s, (DWORD)lstrlenA(s), &n, NULL) && n == (DWORD)lstrlenA(s);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: holdopen <path> <ms>\n");
        return 2;
    }
    DWORD ms = (DWORD)atoi(argv[2]);
    HANDLE h = CreateFileA(argv[1], GENERIC_WRITE, FILE_SHARE_READ, NULL, CREATE_ALWAYS,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "CreateFileA %s: error %lu\n", argv[1], GetLastError());
        return 1;
    }
    if (!put(h, "part1")) return 1;
    FlushFileBuffers(h);
    Sleep(ms);
    if (!put(h, "part2")) return 1;
    FlushFileBuffers(h);
    Sleep(ms);
    CloseHandle(h);
    printf("closed\n");
    return 0;
}
