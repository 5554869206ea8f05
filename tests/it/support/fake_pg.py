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


def startup(conn):
    (length,) = struct.unpack("!i", read_exact(conn, 4))
    body = read_exact(conn, length - 4)
    if length == 8 and struct.unpack("!i", body)[0] == SSL_REQUEST:
        # No TLS here: the client goes on in plain text (sslmode=prefer, the default).
        conn.sendall(b"N")
        (length,) = struct.unpack("!i", read_exact(conn, 4))
        read_exact(conn, length - 4)
    conn.sendall(
        message(b"R", struct.pack("!i", 0))
        + message(b"S", cstr("server_version") + cstr("15.0"))
        # As PostgreSQL 14 and later report them: a primary, read-write by default.
        + message(b"S", cstr("in_hot_standby") + cstr("off"))
        + message(b"S", cstr("default_transaction_read_only") + cstr("off"))
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
    startup(conn)
    while True:
        tag, body = read_message(conn)
        if tag == b"X":
            return
        if mode == "hang-on-query":
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
