#!/usr/bin/env bash
# End-to-end demo of kamailio.cfg + register.xml (SQLite and PostgreSQL).
# Needs: kamailio kamailio-sqlite-modules kamailio-postgres-modules sip-tester python3,
# and for the PostgreSQL part a server on 127.0.0.1:5432 where user postgres has
# trust auth (skip it with NO_PG=1). Creates/drops a scratch database "kamdemo"
# and a role "kamdemo". Stops every process it starts, also on failure.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
KPID=""
cleanup() {
  if [ -n "$KPID" ] && kill -0 "$KPID" 2>/dev/null; then kill -TERM "$KPID"; wait "$KPID" 2>/dev/null; fi
  [ -n "${WPID:-}" ] && kill "$WPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

free_udp_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Wait until Kamailio answers OPTIONS with 200 (at most ~5 s).
wait_ready() {
  python3 - "$1" <<'PY'
import socket, sys, time
port = int(sys.argv[1]); t0 = time.time()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(0.1)
lp = s.getsockname()[1]
for i in range(50):
    msg = (f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-probe{i}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{i}\r\nTo: <sip:ping@127.0.0.1>\r\n"
           f"Call-ID: probe-{i}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    try:
        s.sendto(msg.encode(), ("127.0.0.1", port))
        if s.recv(65535).startswith(b"SIP/2.0 200"):
            print(f"  ready after {time.time()-t0:.2f}s"); sys.exit(0)
    except (socket.timeout, ConnectionRefusedError):
        pass
    time.sleep(0.05)
print("  kamailio not ready"); sys.exit(1)
PY
}

start_kamailio() {  # extra -A args
  PORT=$(free_udp_port)
  kamailio -f "$HERE/kamailio.cfg" -DD -E -m 64 -M 8 -w "$WORK" -Y "$WORK" \
    -P "$WORK/kamailio.pid" -l "udp:127.0.0.1:$PORT" "$@" >"$WORK/kamailio.log" 2>&1 &
  KPID=$!
  wait_ready "$PORT" || { cat "$WORK/kamailio.log"; exit 1; }
}
stop_kamailio() { kill -TERM "$KPID"; wait "$KPID" 2>/dev/null; KPID=""; }

FAIL=0
# expect NAME WANTED_RC USER SECRET
expect() {
  local name=$1 want=$2 user=$3 secret=$4 rc
  (cd "$WORK" && sipp -sf "$HERE/register.xml" -m 1 -nostdin -timeout 5s -timeout_error \
     -recv_timeout 2000 -i 127.0.0.1 -p "$(free_udp_port)" -key domain pbx.example.com \
     -s "$user" -au "$user" -ap "$secret" "127.0.0.1:$PORT" >"$WORK/sipp.out" 2>&1)
  rc=$?
  if [ "$rc" = "$want" ]; then echo "  ok   $name (sipp exit $rc)"; else echo "  FAIL $name (sipp exit $rc, wanted $want)"; FAIL=1; fi
}

echo "== SQLite (WAL), subscriber is a VIEW"
python3 - "$WORK/state.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute("PRAGMA journal_mode=WAL")
c.executescript("""
create table extension(ext text primary key, secret text not null, kind text not null, device text);
create table meta(domain text);
insert into meta values('pbx.example.com');
insert into extension values('1001','s3cret-1001','user','001565aabbcc'), ('1002','s3cret-1002','virtual',null);
create view subscriber as
  select e.rowid as id, e.ext as username, m.domain as domain, e.secret as password, '' as ha1, '' as ha1b
  from extension e, meta m where e.kind='user' and e.device is not null;
create table version(table_name varchar(32) not null primary key, table_version integer default 0 not null);
insert into version values('subscriber', 7);
"""); c.commit()
PY
start_kamailio -A "DBURL=\"sqlite:///$WORK/state.db\"" -A "SQLITE_READONLY=\"$WORK/state.db\""
expect "registered"             0  1001 s3cret-1001
expect "wrong secret refused"   97 1001 wrong
expect "unknown user refused"   97 1009 whatever
expect "virtual (not in view)"  97 1002 s3cret-1002
echo "  writer holds BEGIN IMMEDIATE for 3 s (changes 1001's secret, adds 1003)"
python3 - "$WORK/state.db" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("update extension set secret='new-1001' where ext='1001'")
c.execute("insert into extension values('1003','s3cret-1003','user','001565000003')")
time.sleep(3); c.execute("COMMIT")
PY
WPID=$!
sleep 0.5
expect "during write: old secret still works" 0  1001 s3cret-1001
expect "during write: uncommitted user absent" 97 1003 s3cret-1003
wait "$WPID"; WPID=""
expect "after commit: old secret refused"     97 1001 s3cret-1001
expect "after commit: new secret registers"   0  1001 new-1001
expect "after commit: new user registers"     0  1003 s3cret-1003
stop_kamailio
echo "== SQLite with -A REFUSE_403"
start_kamailio -A "DBURL=\"sqlite:///$WORK/state.db\"" -A REFUSE_403
expect "registered"                0  1001 new-1001
expect "wrong secret refused (403)" 97 1001 wrong
stop_kamailio
echo "== kamailio down: no answer"
PORT=$(free_udp_port)
expect "no server" 1 1001 new-1001

if [ "${NO_PG:-0}" != 1 ]; then
  echo "== PostgreSQL: VIEW pbxsync.subscriber, role search_path"
  P="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q"
  $P -c "drop database if exists kamdemo" -c "drop role if exists kamdemo" -c "create database kamdemo" -c "create role kamdemo login" >/dev/null
  $P -d kamdemo <<'SQL'
create schema pbxsync;
create table pbxsync.extension(ext text primary key, secret text not null, kind text not null, device text);
create table pbxsync.meta(domain text);
insert into pbxsync.meta values('pbx.example.com');
insert into pbxsync.extension values('1001','pg-1001','user','001565aabbcc'),('1002','pg-1002','virtual',null);
create view pbxsync.subscriber as
  select row_number() over (order by e.ext)::int as id, e.ext as username, m.domain as domain,
         e.secret as password, ''::text as ha1, ''::text as ha1b
  from pbxsync.extension e, pbxsync.meta m where e.kind='user' and e.device is not null;
create table pbxsync.version(table_name varchar(32) not null primary key, table_version integer default 0 not null);
insert into pbxsync.version values('subscriber', 7);
grant usage on schema pbxsync to kamdemo;
grant select on all tables in schema pbxsync to kamdemo;
alter role kamdemo set search_path = pbxsync;
SQL
  start_kamailio -A WITH_POSTGRES -A 'DBURL="postgres://kamdemo@127.0.0.1:5432/kamdemo"'
  expect "registered"            0  1001 pg-1001
  expect "wrong secret refused"  97 1001 wrong
  expect "unknown user refused"  97 1009 whatever
  expect "virtual refused"       97 1002 pg-1002
  stop_kamailio
  echo "== PostgreSQL: schema-qualified table name, no search_path"
  $P -c "alter role kamdemo reset search_path"
  start_kamailio -A WITH_POSTGRES -A 'DBURL="postgres://kamdemo@127.0.0.1:5432/kamdemo"' -A 'SUBSCRIBER_TABLE="pbxsync.subscriber"'
  expect "registered"            0  1001 pg-1001
  expect "wrong secret refused"  97 1001 wrong
  stop_kamailio
  echo "== PostgreSQL: no search_path, plain name -> query fails -> refused"
  start_kamailio -A WITH_POSTGRES -A 'DBURL="postgres://kamdemo@127.0.0.1:5432/kamdemo"'
  expect "relation not found: refused" 97 1001 pg-1001
  stop_kamailio
  $P -c "drop database kamdemo" -c "drop role kamdemo"
fi
[ "$FAIL" = 0 ] && echo "all cases ok" || { echo "SOME CASES FAILED"; exit 1; }
