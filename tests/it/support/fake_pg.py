# A fake PostgreSQL server on 127.0.0.1 that misbehaves on purpose, for the faults no real
# server can be made to show on cue. It prints its port, then serves connections one at a
# time (trust authentication, protocol 3.0) until killed.
#
#   python3 fake_pg.py MODE
#
# MODE:
#   hang-after-early   answers LISTEN's query with one notification, then nothing: a backend
#                      that stops between committing LISTEN and answering.
#   error-with-note    answers LISTEN properly; answers the next query (the heartbeat) with a
#                      notification, then an error, then ReadyForQuery.
#   hang-on-query      completes the start-up, then answers nothing: a hung backend.
#   tls-hang           answers an SSLRequest with 'S', then never speaks TLS.
#   tls-close          answers an SSLRequest with 'S', then closes the connection.
#   old-standby, old-primary, old-hang-session, old-session-error
#                      a server before PostgreSQL 14 (no in_hot_standby reported): a standby,
#                      a primary, one that never answers the session query, one whose
#                      pg_is_in_recovery() fails.
#   old-standby        a server before PostgreSQL 14 (no in_hot_standby, no
#                      default_transaction_read_only at start-up) that is a hot standby:
#                      pg_is_in_recovery() and transaction_read_only say so, LISTEN fails
#                      with 25006 as a real standby's does.
#   old-primary        the same, a primary: the session query says f, LISTEN is answered.
#   old-hang-session   a server before 14 that completes the start-up and then never
#                      answers the session query (nor anything else).
#   old-session-error  a server before 14 that answers the session query with an error.
# In the old-* modes, a query naming inet_server_port is answered with the fake's own port,
# so that psql can say which server it chose.
import socket
import struct
import sys


def message(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(text):
    return text.encode() + b"\0"


def notification(channel, payload):
    return message(b"A", struct.pack("!i", 4242) + cstr(channel) + cstr(payload))


def ready():
    return message(b"Z", b"I")


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_message(conn):
    tag = read_exact(conn, 1)
    (length,) = struct.unpack("!i", read_exact(conn, 4))
    return tag, read_exact(conn, length - 4)


SSL_REQUEST = 80877103


PORT = 0


def rows(values):
    # One row of text columns, as a simple query answers it.
    out = message(b"T", struct.pack("!h", len(values)) + b"".join(
        cstr("c%d" % i) + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0) for i in range(len(values))))
    body = struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", len(v)) + v.encode()
    out += message(b"D", body)
    return out + message(b"C", cstr("SELECT 1")) + ready()


def error_reply(code, text):
    return message(b"E", b"SERROR\0C" + code.encode() + b"\0M" + text.encode() + b"\0\0") + ready()


def old_answer(mode, sql):
    standby = mode == "old-standby"
    if "inet_server_port" in sql:
        return rows([str(PORT)])
    if "pg_is_in_recovery" in sql and "transaction_read_only" in sql:
        return rows(["t", "t"] if standby else ["f", "f"])
    if "pg_is_in_recovery" in sql:
        return rows(["t" if standby else "f"])
    if "transaction_read_only" in sql:
        return rows(["on" if standby else "off"])
    if standby and "LISTEN" in sql.upper():
        return error_reply("25006", "cannot execute LISTEN during recovery")
    return listen_answer(sql)


def startup(conn, mode=""):
    (length,) = struct.unpack("!i", read_exact(conn, 4))
    body = read_exact(conn, length - 4)
    if length == 8 and struct.unpack("!i", body)[0] == SSL_REQUEST:
        # No TLS here: the client goes on in plain text (sslmode=prefer, the default).
        conn.sendall(b"N")
        (length,) = struct.unpack("!i", read_exact(conn, 4))
        read_exact(conn, length - 4)
    old = mode.startswith("old-")
    params = message(b"S", cstr("server_version") + cstr("13.0" if old else "15.0"))
    if not old:
        # As PostgreSQL 14 and later report them: a primary, read-write by default.
        params += message(b"S", cstr("in_hot_standby") + cstr("off"))
        params += message(b"S", cstr("default_transaction_read_only") + cstr("off"))
    conn.sendall(
        message(b"R", struct.pack("!i", 0))
        + params
        + message(b"S", cstr("client_encoding") + cstr("UTF8"))
        + message(b"K", struct.pack("!ii", 4242, 1))
        + ready()
    )


def listen_answer(sql):
    statements = [s for s in sql.split(";") if s.strip()]
    out = b""
    for s in statements:
        if s.strip().upper().startswith("LISTEN"):
            out += message(b"C", cstr("LISTEN"))
    out += message(b"T", struct.pack("!h", 1) + cstr("pid") + struct.pack("!ihihih", 0, 0, 23, 4, -1, 0))
    out += message(b"D", struct.pack("!h", 1) + struct.pack("!i", 4) + b"4242")
    out += message(b"C", cstr("SELECT 1"))
    return out + ready()


def serve(conn, mode):
    if mode.startswith("tls-"):
        read_exact(conn, 8)
        conn.sendall(b"S")
        if mode == "tls-hang":
            while conn.recv(4096):
                pass
        return
    startup(conn, mode)
    while True:
        tag, body = read_message(conn)
        if tag == b"X":
            return
        if mode in ("old-standby", "old-primary") and tag == b"Q":
            conn.sendall(old_answer(mode, body.rstrip(b"\0").decode()))
            continue
        if mode == "old-session-error" and tag == b"Q":
            sql = body.rstrip(b"\0").decode()
            if "pg_is_in_recovery" in sql:
                conn.sendall(error_reply("42883", "function pg_catalog.pg_is_in_recovery() does not exist"))
            else:
                conn.sendall(listen_answer(sql))
            continue
        if mode in ("hang-on-query", "old-hang-session"):
            while conn.recv(4096):
                pass
            return
        if tag == b"Q":
            sql = body.rstrip(b"\0").decode()
            if mode == "hang-after-early":
                conn.sendall(notification("fk", "early"))
                while conn.recv(4096):
                    pass
                return
            conn.sendall(listen_answer(sql))
        elif tag == b"S" and mode == "error-with-note":
            error = b"SERROR\0C57014\0Mcanceling statement due to user request\0\0"
            conn.sendall(notification("fk", "must-not-be-lost") + message(b"E", error) + ready())


def main():
    mode = sys.argv[1]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    global PORT
    PORT = server.getsockname()[1]
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        try:
            serve(conn, mode)
        except (EOFError, ConnectionError):
            pass
        finally:
            conn.close()


main()
