/*
 * A minimal Windows SMTP client for the Wine tests (issue 22, application
 * attribution): connects with Winsock to 127.0.0.1:<port>, sends one mail
 * (EHLO, MAIL, RCPT, DATA, QUIT) with the given subject, and exits 0 when
 * every reply was the expected one. The agent must name this exe as the
 * record's client application.
 *
 * Build: x86_64-w64-mingw32-gcc -O2 -o kiroku-smtpclient.exe smtpclient.c -lws2_32
 * Usage: kiroku-smtpclient.exe <port> <subject>
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static SOCKET s = INVALID_SOCKET;
static char buf[8192];
static int have = 0;

/* Reads one (possibly multi-line) reply; returns its code or -1. */
static int reply(void)
{
    for (;;) {
        char *nl;
        while ((nl = memchr(buf, '\n', have)) != NULL) {
            int len = (int)(nl - buf) + 1;
            int code = atoi(buf);
            int last = len >= 4 && buf[3] != '-';
            fprintf(stderr, "S: %.*s", len, buf);
            memmove(buf, buf + len, have - len);
            have -= len;
            if (last)
                return code;
        }
        if (have == (int)sizeof buf)
            return -1;
        int n = recv(s, buf + have, (int)sizeof buf - have, 0);
        if (n <= 0)
            return -1;
        have += n;
    }
}

static int send_all(const char *p, int len)
{
    while (len > 0) {
        int n = send(s, p, len, 0);
        if (n <= 0)
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

static int cmd(const char *line, int want)
{
    char out[1024];
    int len = snprintf(out, sizeof out, "%s\r\n", line);
    fprintf(stderr, "C: %s\n", line);
    if (send_all(out, len) < 0)
        return -1;
    int code = reply();
    if (code != want) {
        fprintf(stderr, "%s: got %d, wanted %d\n", line, code, want);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    WSADATA wsa;
    struct sockaddr_in a;
    char msg[2048];

    if (argc != 3) {
        fprintf(stderr, "usage: %s <port> <subject>\n", argv[0]);
        return 2;
    }
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        return 3;
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        return 4;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "connect: %d\n", WSAGetLastError());
        return 5;
    }
    snprintf(msg, sizeof msg,
             "From: winclient@example.co.jp\r\n"
             "To: client@example.org\r\n"
             "Subject: %s\r\n"
             "Message-ID: <%s@winclient.example.co.jp>\r\n"
             "\r\n"
             "Sent by a Windows program through Winsock.\r\n"
             ".\r\n",
             argv[2], argv[2]);
    if (reply() != 220 || cmd("EHLO winclient", 250) < 0 ||
        cmd("MAIL FROM:<winclient@example.co.jp>", 250) < 0 ||
        cmd("RCPT TO:<client@example.org>", 250) < 0 || cmd("DATA", 354) < 0)
        return 6;
    if (send_all(msg, (int)strlen(msg)) < 0 || reply() != 250)
        return 7;
    if (cmd("QUIT", 221) < 0)
        return 8;
    closesocket(s);
    WSACleanup();
    return 0;
}
