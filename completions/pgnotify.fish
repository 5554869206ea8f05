# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pgnotify_global_optspecs
    string join \n d/dbname= h/host= p/port= U/username= w/no-password W/password color= q/quiet v/verbose log-format= ?/help V/version
end

function __fish_pgnotify_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pgnotify_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pgnotify_using_subcommand
    set -l cmd (__fish_pgnotify_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pgnotify -n "__fish_pgnotify_needs_command" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_needs_command" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_needs_command" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -s V -l version -d 'Print version'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "listen" -d 'Print notifications as they arrive'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "notify" -d 'Send a notification (payload from the argument, or stdin with "-")'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "watch-table" -d 'Install a trigger that notifies on a table\'s changes (or --drop it, or --list them)'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "pipe" -d 'Forward notifications as NDJSON, surviving lost connections'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "consumers" -d 'List durable consumers with their lag, or look after the outbox'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "doctor" -d 'Explain why notifications would not arrive, with the fix for each problem'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "demo" -d 'Run pgnotify against a private throwaway PostgreSQL, then remove it'
complete -c pgnotify -n "__fish_pgnotify_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l format -d 'Output format [default: text on a terminal, json otherwise]' -r -f -a "text\t'One line per notification: local time, channel, sender PID, payload'
json\t'NDJSON: {"channel","payload","pid","received_at"} per line'
psql\t'psql\'s sentences: Asynchronous notification "ch" with payload "p" received from server process with PID n'
raw\t'The payload alone, one line each, as sent but for line breaks (written \\n, \\r), for shell loops that read lines'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s x -l exec -d 'Run COMMAND (through /bin/sh -c) for each notification instead of printing it: the payload on its stdin and in PGNOTIFY_PAYLOAD, with PGNOTIFY_CHANNEL and PGNOTIFY_PID. For a gap it runs with PGNOTIFY_GAP set and the gap record on stdin. A failing command is reported on stderr; the run goes on' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s j -l jobs -d 'With --exec: run up to N commands at once (1: one after the other, in order)' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s c -l count -d 'Exit with status 0 after N notifications' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s t -l timeout -d 'Exit with status 124 if the --count notifications (without --count: a first notification) have not arrived within DURATION, e.g. 500ms, 10s, 5m, 1h. It counts from the start, connecting included: without --wait, expiring before LISTEN is answered is status 3' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l max-downtime -d 'Exit with status 3 after being disconnected this long (default: keep reconnecting)' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l heartbeat -d 'Prove the connection alive this often: a notification to itself, whose query must be answered and which must come back within 5 s each, else reconnect. 0 turns it off' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l on-overflow -d 'When the output is too slow and 1 MiB of notifications wait for it for a second: drop (count them, report a gap), block (stop reading the server), or exit (status 1)' -r -f -a "drop\t'Drop notifications, count them, and report the count in a gap record and on stderr'
block\t'Stop reading the server until there is room (holds back the server\'s queue)'
exit\t'End the run with status 1'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l consumer -d 'Durable delivery: read the events that `--durable` senders stored on the CHANNELs, as the consumer NAME, whose checkpoint is kept in the database. First every stored event NAME has not acknowledged, then new ones as they commit, whole transactions in transaction-id order; each NDJSON line carries the event\'s "id" and its transaction\'s "xid". An event is acknowledged once its line is written and flushed to stdout; with --exec once its command exits 0 (a failing one is run again, backing off from 1 s to 30 s; with --jobs N only an unbroken run of successes from the first is acknowledged); with --connect once the peer must have read it (a lost connection begins again with what it may not have read). After a crash the unacknowledged tail comes again; nothing is skipped. Not with --serve. --on-overflow does not apply: a slow reader is waited for' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l stats -d 'Print the counters on stderr every INTERVAL (e.g. 10s, 1m), and once at the end: received, written, dropped, gaps, reconnects, clients, queue bytes and the age of the last event, as key=value on one line (one JSON object with --log-format json). SIGUSR1 prints them once, with or without this option' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l metrics -d 'Serve the counters in Prometheus\' text format at http://ADDR:PORT/metrics. A port alone listens on 127.0.0.1; 0 picks a free one (-v says which). Another address is served to anyone who can reach it, without authentication' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s i -l interactive -d 'An interactive console on a terminal: events above a prompt, commands typed live. History is kept in $XDG_DATA_HOME/pgnotify/history (~/.local/share/pgnotify/history)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l json -d 'Write NDJSON, the same as --format json'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l data -d 'With --json: add "data", the payload parsed as JSON, when it is JSON'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l fetch -d 'For `watch-table` events that carry a key but no row: read the row as it is now, with your own privileges, and add it as "new" under "data" (null when the row is gone since). Only tables watched on the event\'s channel are read, one query per table for all the events that arrived together. With --exec, the row (JSON) is the command\'s stdin, and PGNOTIFY_FETCHED=1 says so'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l wait -d 'If the server is down at start, keep trying instead of exiting with status 3. A refusal retrying cannot fix (wrong password, no such database or role, pg_hba.conf) still exits 3 at once, here and when reconnecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -l no-gap-records -d 'Leave out the gap records that NDJSON output gets when notifications may be lost (stderr still says so)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand listen" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s b -l batch -d 'With --lines: how many lines go in one transaction' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s t -l timeout -d 'Give up with status 124 if connecting and sending take longer than DURATION (500ms, 10s, 5m), saying what was committed by then. Recommended in cron jobs' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s l -l lines -d 'Send one notification per line of standard input'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -l durable -d 'Store each event in the database\'s outbox (the pgnotify schema, created on first use) in the same transaction, for `pipe --consumer` to read even if it is down now; the NOTIFY only wakes consumers. Payloads may then be up to 64 MiB, and every line of --lines is an event, repeated or not'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand notify" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l channel -d 'The channel to notify, exactly as written [default: the table\'s name, without schema]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l events -d 'The changes that notify, comma-separated' -r -f -a "insert\t''
update\t''
delete\t''
truncate\t''"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l columns -d 'With --rows: only these columns in the row images, comma-separated, exact names' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l triggers -d 'Row triggers (one call of the trigger function per row), or auto: statement triggers with transition tables where they send the same events (one call per statement, far cheaper for bulk statements, dearer for single-row ones)' -r -f -a "row\t'Row triggers: the function runs once per changed row'
auto\t'Statement triggers with transition tables, where they send the same events (a plain table with a key; row triggers elsewhere): the function runs once per statement'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l rows -d 'Put the row images in the payload: "new" (INSERT, UPDATE) and "old" (UPDATE, DELETE). Every role that can connect can read them'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l durable -d 'Store each event in the database\'s outbox (the pgnotify schema, created on first use) in the writing transaction, for `pipe --consumer` to read even if it was down; the NOTIFY only wakes consumers. No 8000-byte limit: an event is never truncated. If the writer may not store it (see `pgnotify consumers --grant-writer`), the write fails rather than lose the event. Row triggers only'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l print-sql -d 'Print the SQL that would run (one transaction) and change nothing'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l drop -d 'Remove the trigger and function pgnotify installed on TABLE (nothing else)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l list -d 'List the watched tables (all, or only TABLE) with channel, events and mode: a table on a terminal, NDJSON elsewhere'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -l json -d 'With --list: NDJSON even on a terminal'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand watch-table" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l connect -d 'Send the lines to a TCP peer instead of stdout, reconnecting when it goes away; lines wait for it (4 MiB), then are dropped and counted in a gap record. A new connection starts with a "peer" gap record: an upper bound of what the lost one took unread' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l serve -d 'Serve the lines to every TCP client that connects, from the moment it connects, instead of stdout. A port alone listens on 127.0.0.1; name another address to open it wider. A client that stops reading is disconnected (after 1 MiB)' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s x -l exec -d 'Run COMMAND (through /bin/sh -c) for each notification instead of printing it: the payload on its stdin and in PGNOTIFY_PAYLOAD, with PGNOTIFY_CHANNEL and PGNOTIFY_PID. For a gap it runs with PGNOTIFY_GAP set and the gap record on stdin. A failing command is reported on stderr; the run goes on' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s j -l jobs -d 'With --exec: run up to N commands at once (1: one after the other, in order)' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s c -l count -d 'Exit with status 0 after N notifications' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s t -l timeout -d 'Exit with status 124 if the --count notifications (without --count: a first notification) have not arrived within DURATION, e.g. 500ms, 10s, 5m, 1h. It counts from the start, connecting included: without --wait, expiring before LISTEN is answered is status 3' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l max-downtime -d 'Exit with status 3 after being disconnected this long (default: keep reconnecting)' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l heartbeat -d 'Prove the connection alive this often: a notification to itself, whose query must be answered and which must come back within 5 s each, else reconnect. 0 turns it off' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l on-overflow -d 'When the output is too slow and 1 MiB of notifications wait for it for a second: drop (count them, report a gap), block (stop reading the server), or exit (status 1)' -r -f -a "drop\t'Drop notifications, count them, and report the count in a gap record and on stderr'
block\t'Stop reading the server until there is room (holds back the server\'s queue)'
exit\t'End the run with status 1'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l consumer -d 'Durable delivery: read the events that `--durable` senders stored on the CHANNELs, as the consumer NAME, whose checkpoint is kept in the database. First every stored event NAME has not acknowledged, then new ones as they commit, whole transactions in transaction-id order; each NDJSON line carries the event\'s "id" and its transaction\'s "xid". An event is acknowledged once its line is written and flushed to stdout; with --exec once its command exits 0 (a failing one is run again, backing off from 1 s to 30 s; with --jobs N only an unbroken run of successes from the first is acknowledged); with --connect once the peer must have read it (a lost connection begins again with what it may not have read). After a crash the unacknowledged tail comes again; nothing is skipped. Not with --serve. --on-overflow does not apply: a slow reader is waited for' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l stats -d 'Print the counters on stderr every INTERVAL (e.g. 10s, 1m), and once at the end: received, written, dropped, gaps, reconnects, clients, queue bytes and the age of the last event, as key=value on one line (one JSON object with --log-format json). SIGUSR1 prints them once, with or without this option' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l metrics -d 'Serve the counters in Prometheus\' text format at http://ADDR:PORT/metrics. A port alone listens on 127.0.0.1; 0 picks a free one (-v says which). Another address is served to anyone who can reach it, without authentication' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l websocket -d 'Serve the lines to WebSocket clients, one text frame each (gap records too), from the moment each connects. A port alone listens on 127.0.0.1; another address needs --token-file. A client that stops reading is disconnected (after 1 MiB) with a close frame; what clients send is ignored, but for pings and closes' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l sse -d 'Serve the lines as Server-Sent Events, for `new EventSource(url)`: each named after its channel (gap records: `gap`), its data the NDJSON object, with an id. A client that comes back with Last-Event-ID first gets a "client" gap record counting what it missed. The same port as --websocket serves both' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l path -d 'Where the stream (and --page) is served; other paths are answered 404' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l allow-channel -d 'Let clients ask only for channels matching GLOB (`*`, `?`); repeatable. A client asks with ?channel=NAME (repeatable), else gets every allowed channel; asking for one not allowed is answered 403' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l token-file -d 'Require the token on the first line of FILE, as `Authorization: Bearer TOKEN` or `?token=TOKEN` (EventSource cannot send headers), compared in constant time; needed to listen on an address other than loopback' -r -F
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l allow-origin -d 'Let pages from ORIGIN (`https://app.example`, or `*`) read the stream; repeatable. Pages of the stream\'s own origin always may; others are answered 403' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l keepalive -d 'Ping idle WebSocket clients (and send SSE clients a comment) this often; a WebSocket client that answers nothing for twice as long is disconnected' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l data -d 'Add "data": the payload parsed as JSON, when it is JSON'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l fetch -d 'For `watch-table` events that carry a key but no row: read the row as it is now, with your own privileges, and add it as "new" under "data" (null when the row is gone since). Only tables watched on the event\'s channel are read, one query per table for all the events that arrived together. With --exec, the row (JSON) is the command\'s stdin, and PGNOTIFY_FETCHED=1 says so'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l stdout -d 'With --connect, --serve, --websocket or --sse: write the lines to stdout as well'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l wait -d 'If the server is down at start, keep trying instead of exiting with status 3. A refusal retrying cannot fix (wrong password, no such database or role, pg_hba.conf) still exits 3 at once, here and when reconnecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l no-gap-records -d 'Leave out the gap records that NDJSON output gets when notifications may be lost (stderr still says so)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -l page -d 'Serve a page showing the events live, per channel, with gap records, to a browser that opens the stream\'s URL (EventSource and WebSocket clients still get the stream)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand pipe" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l drop -l drop-consumer -d 'Remove the consumer NAME: its checkpoint is deleted, and its unread events no longer hold back retention for the other consumers of their channels (a channel that no consumer follows any more keeps its events for the next one that will)' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l grant-writer -d 'Grant ROLE what a --durable sender needs' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l grant-consumer -d 'Grant ROLE what a --consumer reader needs' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l max-lag -d 'A consumer whose oldest unread event is older than this is stale' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l prune -d 'Delete now the events that every consumer of their channel has acknowledged'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l install -d 'Create the pgnotify schema (what the first --durable or --consumer would do)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l print-sql -d 'With --install or a grant: print the SQL instead of running it'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -l json -d 'NDJSON even on a terminal'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand consumers" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -l json -d 'One JSON document on stdout instead of the text report'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand doctor" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s d -l dbname -d 'Database name, or a whole connection string ("host=db1 dbname=shop" or "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s h -l host -d 'Server host name, or directory of its unix socket [default: the socket in /var/run/postgresql or /tmp]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s p -l port -d 'Server port [default: 5432]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s U -l username -d 'User name to connect as [default: the operating-system user]' -r
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -l color -d 'When to colour the text output and this help: auto, always, never' -r -f -a "auto\t'Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow'
always\t'Always colour text output'
never\t'Never colour'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -l log-format -d 'How stderr lines read: text, or json (one JSON object per line: time, level, message)' -r -f -a "text\t'Lines for people (and grep)'
json\t'One JSON object per line'"
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -l keep -d 'Leave the server running and print its connection settings as shell `export` lines on stdout (the demo\'s own output then goes to stderr)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -l tls -d 'Serve TLS too, with a certificate from a certificate authority made for the demo, and connect to it over TCP as `localhost` with sslmode=verify-full. With --keep, the settings printed do the same: PGHOST=localhost, PGSSLMODE=verify-full and PGSSLROOTCERT (the CA\'s certificate, in the server\'s directory)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s w -l no-password -d 'Never prompt for a password: fail if none is found in PGPASSWORD or the password file'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s W -l password -d 'Prompt for a password (without echo) before connecting'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s q -l quiet -d 'Print only errors on stderr, no warnings'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s v -l verbose -d 'Also say on stderr what pgnotify is doing: the server reached, when it is listening'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand demo" -s ? -l help -d 'Print help (-? for a summary, --help for all of it)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "listen" -d 'Print notifications as they arrive'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "notify" -d 'Send a notification (payload from the argument, or stdin with "-")'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "watch-table" -d 'Install a trigger that notifies on a table\'s changes (or --drop it, or --list them)'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "pipe" -d 'Forward notifications as NDJSON, surviving lost connections'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "consumers" -d 'List durable consumers with their lag, or look after the outbox'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "doctor" -d 'Explain why notifications would not arrive, with the fix for each problem'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "demo" -d 'Run pgnotify against a private throwaway PostgreSQL, then remove it'
complete -c pgnotify -n "__fish_pgnotify_using_subcommand help; and not __fish_seen_subcommand_from listen notify watch-table pipe consumers doctor demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
