/* A stand-in for a Windows command (pnputil, bcdedit, schtasks, reg, shutdown) in the
 * Wine tests of provision.cmd (tests/test_provision_wine.py). One source, copied under
 * each name; the name it runs under is the tool it plays.
 *
 * It appends one JSON line to the file named by AERO_FAKE_LOG:
 *   {"tool": "schtasks", "raw": <GetCommandLineW()>, "argv": [<argv as the C runtime parsed it>]}
 * and exits with AERO_FAKE_EXIT_<TOOL> (0 when unset); with AERO_FAKE_EXIT_<TOOL>_IF set,
 * only when the raw command line contains that text.
 *
 * Under the name "runline" it plays the program that runs a FirstLogonCommand: it reads a
 * command line (UTF-8) from the file given as its argument, puts AERO_FAKE_PATH in front of
 * PATH, runs the line with CreateProcessW as given, and exits with the line's exit code.
 *
 * Built with mingw-w64: x86_64-w64-mingw32-gcc -municode -O2 -o fake.exe fake_tool.c
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

static void append_utf8(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
    if (*len + n + 1 > *cap) {
        while (*len + n + 1 > *cap) *cap = *cap ? *cap * 2 : 4096;
        *buf = realloc(*buf, *cap);
        if (!*buf) ExitProcess(70);
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
}

static void append_json_string(char **buf, size_t *len, size_t *cap, const wchar_t *text) {
    append_utf8(buf, len, cap, "\"", 1);
    for (const wchar_t *p = text; *p; p++) {
        char esc[8];
        if (*p == L'"' || *p == L'\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            append_utf8(buf, len, cap, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*p);
            append_utf8(buf, len, cap, esc, 6);
        } else {
            char utf8[8];
            /* one UTF-16 unit at a time; a surrogate pair is written as two escapes */
            if (*p >= 0xD800 && *p <= 0xDFFF) {
                snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*p);
                append_utf8(buf, len, cap, esc, 6);
                continue;
            }
            int n = WideCharToMultiByte(CP_UTF8, 0, p, 1, utf8, sizeof utf8, NULL, NULL);
            append_utf8(buf, len, cap, utf8, (size_t)n);
        }
    }
    append_utf8(buf, len, cap, "\"", 1);
}

static void tool_name(wchar_t *out, size_t size) {
    wchar_t path[MAX_PATH];
    DWORD n = GetModuleFileNameW(NULL, path, MAX_PATH);
    path[n < MAX_PATH ? n : MAX_PATH - 1] = 0;
    wchar_t *base = wcsrchr(path, L'\\');
    base = base ? base + 1 : path;
    wchar_t *dot = wcsrchr(base, L'.');
    if (dot) *dot = 0;
    wcsncpy(out, base, size - 1);
    out[size - 1] = 0;
    _wcslwr(out);
}

static int run_line(const wchar_t *file) {
    HANDLE h = CreateFileW(file, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) return 71;
    char data[32768];
    DWORD got = 0;
    if (!ReadFile(h, data, sizeof data - 1, &got, NULL)) return 72;
    CloseHandle(h);
    data[got] = 0;
    static wchar_t line[32768];
    if (!MultiByteToWideChar(CP_UTF8, 0, data, -1, line, 32768)) return 73;

    static wchar_t fakes[4096], path[32768 + 4096];
    if (GetEnvironmentVariableW(L"AERO_FAKE_PATH", fakes, 4096)) {
        wcscpy(path, fakes);
        wcscat(path, L";");
        GetEnvironmentVariableW(L"PATH", path + wcslen(path), 32768);
        SetEnvironmentVariableW(L"PATH", path);
    }
    STARTUPINFOW si;
    ZeroMemory(&si, sizeof si);
    si.cb = sizeof si;
    PROCESS_INFORMATION pi;
    if (!CreateProcessW(NULL, line, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) return 74;
    WaitForSingleObject(pi.hProcess, INFINITE);
    DWORD code = 75;
    GetExitCodeProcess(pi.hProcess, &code);
    return (int)code;
}

int wmain(int argc, wchar_t **argv) {
    wchar_t tool[MAX_PATH];
    tool_name(tool, MAX_PATH);
    if (wcscmp(tool, L"runline") == 0) return argc == 2 ? run_line(argv[1]) : 64;

    char *buf = NULL;
    size_t len = 0, cap = 0;
    append_utf8(&buf, &len, &cap, "{\"tool\": ", 9);
    append_json_string(&buf, &len, &cap, tool);
    append_utf8(&buf, &len, &cap, ", \"raw\": ", 9);
    append_json_string(&buf, &len, &cap, GetCommandLineW());
    append_utf8(&buf, &len, &cap, ", \"argv\": [", 11);
    for (int i = 0; i < argc; i++) {
        if (i) append_utf8(&buf, &len, &cap, ", ", 2);
        append_json_string(&buf, &len, &cap, argv[i]);
    }
    append_utf8(&buf, &len, &cap, "]}\n", 3);

    wchar_t log_path[MAX_PATH];
    if (GetEnvironmentVariableW(L"AERO_FAKE_LOG", log_path, MAX_PATH)) {
        HANDLE h = CreateFileW(log_path, FILE_APPEND_DATA, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, OPEN_ALWAYS,
                               FILE_ATTRIBUTE_NORMAL, NULL);
        if (h == INVALID_HANDLE_VALUE) return 76;
        DWORD written = 0;
        WriteFile(h, buf, (DWORD)len, &written, NULL);
        CloseHandle(h);
    }

    wchar_t name[MAX_PATH + 32], value[64], match[4096];
    _wcsupr(tool);
    swprintf(name, MAX_PATH + 32, L"AERO_FAKE_EXIT_%ls", tool);
    if (!GetEnvironmentVariableW(name, value, 64)) return 0;
    wcscat(name, L"_IF");
    if (GetEnvironmentVariableW(name, match, 4096) && !wcsstr(GetCommandLineW(), match)) return 0;
    return _wtoi(value);
}
