/*
 * The C peer of bench/pipe.sh: a minimal libpq listener writing pgnotify's NDJSON contract,
 * one line per notification:
 *   {"channel":"...","payload":"...","pid":N,"received_at":"2026-11-24T01:02:03.456789Z"}
 * Strings are escaped as serde_json writes them (pgnotify's encoder): \" \\ \b \f \n \r \t,
 * the other control characters as \u00xx, everything else (UTF-8 included) as is. Lines go
 * through a 64 KiB stdio buffer flushed when no more input is waiting on the socket: the same
 * batching as pgnotify. Once LISTEN is answered it says "ready: listening on CHANNEL" on stderr.
 *   peer CONNINFO CHANNEL [COUNT]      (exits after COUNT notifications; 0 or none: never)
 * Built by bench/pipe.sh:  cc -O2 -I"$(pg_config --includedir)" bench/peer.c -lpq
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die(PGconn *conn, const char *what)
{
	fprintf(stderr, "peer: %s: %s", what, conn ? PQerrorMessage(conn) : "\n");
	PQfinish(conn);
	exit(1);
}

/* A JSON string: runs of plain bytes in one write, escapes in between. */
static void json_string(const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *) s, *run = p;

	putchar('"');
	for (; *p; p++)
	{
		unsigned char c = *p;
		const char *short_escape = NULL;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		fwrite(run, 1, p - run, stdout);
		switch (c)
		{
			case '"': short_escape = "\\\""; break;
			case '\\': short_escape = "\\\\"; break;
			case '\b': short_escape = "\\b"; break;
			case '\f': short_escape = "\\f"; break;
			case '\n': short_escape = "\\n"; break;
			case '\r': short_escape = "\\r"; break;
			case '\t': short_escape = "\\t"; break;
		}
		if (short_escape)
			fputs(short_escape, stdout);
		else
		{
			char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

			fwrite(u, 1, sizeof u, stdout);
		}
		run = p + 1;
	}
	fwrite(run, 1, p - run, stdout);
	putchar('"');
}

/* "2026-11-24T01:02:03.456789Z", UTC, microseconds; the seconds part is formatted once a second. */
static const char *received_at(void)
{
	static char text[40];
	static time_t formatted = -1;
	struct timespec now;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec != formatted)
	{
		gmtime_r(&now.tv_sec, &tm);
		strftime(text, 21, "%Y-%m-%dT%H:%M:%S", &tm);
		formatted = now.tv_sec;
	}
	snprintf(text + 19, sizeof text - 19, ".%06ldZ", now.tv_nsec / 1000);
	return text;
}

int main(int argc, char **argv)
{
	PGconn *conn;
	PGresult *res;
	PGnotify *n;
	char *channel, *sql;
	unsigned long long count = 0, seen = 0;
	static char buffer[64 * 1024];
	struct pollfd pfd;
	int status = 0;

	if (argc < 3 || argc > 4)
	{
		fprintf(stderr, "usage: %s CONNINFO CHANNEL [COUNT]\n", argv[0]);
		return 2;
	}
	if (argc == 4)
		count = strtoull(argv[3], NULL, 10);
	setvbuf(stdout, buffer, _IOFBF, sizeof buffer);

	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
		die(conn, "connect");
	channel = PQescapeIdentifier(conn, argv[2], strlen(argv[2]));
	if (!channel)
		die(conn, "channel");
	sql = malloc(strlen(channel) + 8);
	if (!sql)
		die(NULL, "out of memory");
	sprintf(sql, "LISTEN %s", channel);
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		die(conn, "LISTEN");
	PQclear(res);
	free(sql);
	PQfreemem(channel);
	fprintf(stderr, "ready: listening on %s\n", argv[2]);

	pfd.fd = PQsocket(conn);
	pfd.events = POLLIN;
	for (;;)
	{
		int ready;

		while ((n = PQnotifies(conn)) != NULL)
		{
			fputs("{\"channel\":", stdout);
			json_string(n->relname);
			fputs(",\"payload\":", stdout);
			json_string(n->extra);
			fprintf(stdout, ",\"pid\":%d,\"received_at\":\"%s\"}\n", n->be_pid, received_at());
			PQfreemem(n);
			if (++seen == count)
				goto done;
		}
		/* Flush only when nothing more is waiting: a burst goes out in full buffers. */
		ready = poll(&pfd, 1, 0);
		if (ready == 0)
		{
			if (fflush(stdout) == EOF)
			{
				status = 1;
				break;
			}
			ready = poll(&pfd, 1, -1);
		}
		if (ready < 0)
		{
			if (errno == EINTR)
				continue;
			perror("peer: poll");
			status = 1;
			break;
		}
		if (!PQconsumeInput(conn))
			die(conn, "read");
	}
done:
	if (fflush(stdout) == EOF || ferror(stdout))
	{
		perror("peer: stdout");
		status = 1;
	}
	PQfinish(conn);
	return status;
}
