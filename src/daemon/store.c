/* SQLite store. The schema has a version (schema_version) and one upgrade step per version,
 * applied in order inside a transaction, so an older database is brought up to date at
 * start and a newer one (from a later mabod) is refused rather than misread. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "daemon/store.h"

/* Upgrade steps: steps[i] takes the schema from version i to i + 1. */
static const char *const steps[] = {
	/* 1: the first schema. */
	"CREATE TABLE vms ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  uuid TEXT NOT NULL UNIQUE,"
	"  spec TEXT NOT NULL,"
	"  autostart INTEGER NOT NULL DEFAULT 0,"
	"  restart TEXT NOT NULL DEFAULT 'never',"
	"  desired TEXT NOT NULL DEFAULT 'stopped',"
	"  state TEXT NOT NULL DEFAULT 'stopped',"
	"  reason TEXT NOT NULL DEFAULT '',"
	"  shim_pid INTEGER NOT NULL DEFAULT 0,"
	"  shim_start INTEGER NOT NULL DEFAULT 0,"
	"  pid INTEGER NOT NULL DEFAULT 0,"
	"  pid_start INTEGER NOT NULL DEFAULT 0,"
	"  started_at INTEGER NOT NULL DEFAULT 0,"
	"  created_at INTEGER NOT NULL);"
	"CREATE TABLE events ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  time INTEGER NOT NULL,"
	"  vm TEXT,"
	"  kind TEXT NOT NULL,"
	"  message TEXT NOT NULL);",
};
#define SCHEMA_VERSION ((int)(sizeof(steps) / sizeof(steps[0])))

static int db_err(struct mabod *d, const char *what)
{
	log_error("database '%s/mabod.db': %s: %s", d->state_dir, what, sqlite3_errmsg(d->db));
	return -EIO;
}

static int exec(struct mabod *d, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(d->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("database '%s/mabod.db': %s", d->state_dir, msg ? msg : "error");
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static int schema_version(struct mabod *d, int *version)
{
	sqlite3_stmt *st;
	*version = 0;
	if (exec(d, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)") < 0)
		return -EIO;
	if (sqlite3_prepare_v2(d->db, "SELECT version FROM schema_version", -1, &st, NULL))
		return db_err(d, "schema version");
	if (sqlite3_step(st) == SQLITE_ROW)
		*version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return 0;
}

int store_open(struct mabod *d, const char *path)
{
	int version;
	if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL)) {
		log_error("database '%s': %s", path, d->db ? sqlite3_errmsg(d->db) : "no memory");
		store_close(d);
		return -EIO;
	}
	sqlite3_busy_timeout(d->db, 5000);
	/* WAL: a commit is one append; FULL: it is on disk when the call returns, so a
	 * definition the client was told about survives a crash of the daemon or the host. */
	if (exec(d, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON") <
		    0 ||
	    exec(d, "BEGIN IMMEDIATE") < 0)
		goto err;
	if (schema_version(d, &version) < 0)
		goto err_tx;
	if (version > SCHEMA_VERSION) {
		log_error("database '%s': schema version %d is newer than this mabod's (%d)", path,
			  version, SCHEMA_VERSION);
		goto err_tx;
	}
	for (int v = version; v < SCHEMA_VERSION; v++) {
		if (exec(d, steps[v]) < 0)
			goto err_tx;
		log_info("database '%s': schema upgraded to version %d", path, v + 1);
	}
	if (version != SCHEMA_VERSION) {
		char sql[96];
		snprintf(sql, sizeof(sql),
			 "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d)",
			 SCHEMA_VERSION);
		if (exec(d, sql) < 0)
			goto err_tx;
	}
	if (exec(d, "COMMIT") < 0)
		goto err_tx;
	return 0;
err_tx:
	exec(d, "ROLLBACK");
err:
	store_close(d);
	return -EIO;
}

void store_close(struct mabod *d)
{
	if (d->db)
		sqlite3_close(d->db);
	d->db = NULL;
}

int store_load(struct mabod *d)
{
	sqlite3_stmt *st;
	struct vmrec **tail = &d->vms;
	if (sqlite3_prepare_v2(d->db,
			       "SELECT id, name, uuid, spec, autostart, restart, desired, state, "
			       "reason, shim_pid, shim_start, pid, pid_start, started_at FROM vms "
			       "ORDER BY name",
			       -1, &st, NULL))
		return db_err(d, "load");
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct vmrec *vm = calloc(1, sizeof(*vm));
		json_error_t jerr;
		if (!vm) {
			sqlite3_finalize(st);
			return -ENOMEM;
		}
		vm->shim_fd = vm->vmm_fd = -1;
		vm->id = sqlite3_column_int64(st, 0);
		snprintf(vm->name, sizeof(vm->name), "%s", sqlite3_column_text(st, 1));
		snprintf(vm->uuid, sizeof(vm->uuid), "%s", sqlite3_column_text(st, 2));
		vm->spec = json_loads((const char *)sqlite3_column_text(st, 3), 0, &jerr);
		vm->autostart = sqlite3_column_int(st, 4);
		if (!vm->spec ||
		    vm_restart_parse((const char *)sqlite3_column_text(st, 5), &vm->restart) < 0 ||
		    vm_state_parse((const char *)sqlite3_column_text(st, 7), &vm->state) < 0) {
			log_error("database: vm '%s': unreadable record, skipped", vm->name);
			json_decref(vm->spec);
			free(vm);
			continue;
		}
		vm->want_running = strcmp((const char *)sqlite3_column_text(st, 6), "running") == 0;
		snprintf(vm->reason, sizeof(vm->reason), "%s", sqlite3_column_text(st, 8));
		vm->shim_pid = sqlite3_column_int(st, 9);
		vm->shim_start = (uint64_t)sqlite3_column_int64(st, 10);
		vm->pid = sqlite3_column_int(st, 11);
		vm->pid_start = (uint64_t)sqlite3_column_int64(st, 12);
		vm->started_at = sqlite3_column_int64(st, 13);
		*tail = vm;
		tail = &vm->next;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(d, "load");
}

int store_insert(struct mabod *d, struct vmrec *vm)
{
	sqlite3_stmt *st;
	char *spec = json_dumps(vm->spec, JSON_COMPACT | JSON_SORT_KEYS);
	if (!spec)
		return -ENOMEM;
	if (sqlite3_prepare_v2(d->db,
			       "INSERT INTO vms (name, uuid, spec, autostart, restart, created_at) "
			       "VALUES (?, ?, ?, ?, ?, ?)",
			       -1, &st, NULL)) {
		free(spec);
		return db_err(d, "insert");
	}
	sqlite3_bind_text(st, 1, vm->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, vm->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, spec, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, vm->autostart);
	sqlite3_bind_text(st, 5, vm_restart_name(vm->restart), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, wall_ms());
	int rc = sqlite3_step(st);
	int ext = sqlite3_extended_errcode(d->db);
	sqlite3_finalize(st);
	free(spec);
	if (rc == SQLITE_CONSTRAINT && ext == SQLITE_CONSTRAINT_UNIQUE)
		return -EEXIST;
	if (rc != SQLITE_DONE)
		return db_err(d, "insert");
	vm->id = sqlite3_last_insert_rowid(d->db);
	return 0;
}

int store_update(struct mabod *d, const struct vmrec *vm)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(
		    d->db,
		    "UPDATE vms SET desired = ?, state = ?, reason = ?, shim_pid = ?, "
		    "shim_start = ?, pid = ?, pid_start = ?, started_at = ? WHERE id = ?",
		    -1, &st, NULL))
		return db_err(d, "update");
	sqlite3_bind_text(st, 1, vm->want_running ? "running" : "stopped", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, vm_state_name(vm->state), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, vm->reason, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, vm->shim_pid);
	sqlite3_bind_int64(st, 5, (int64_t)vm->shim_start);
	sqlite3_bind_int(st, 6, vm->pid);
	sqlite3_bind_int64(st, 7, (int64_t)vm->pid_start);
	sqlite3_bind_int64(st, 8, vm->started_at);
	sqlite3_bind_int64(st, 9, vm->id);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(d, "update");
}

int store_delete(struct mabod *d, const struct vmrec *vm)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(d->db, "DELETE FROM vms WHERE id = ?", -1, &st, NULL))
		return db_err(d, "delete");
	sqlite3_bind_int64(st, 1, vm->id);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(d, "delete");
}

int store_event(struct mabod *d, int64_t time_ms, const char *vm, const char *kind,
		const char *message)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(d->db,
			       "INSERT INTO events (time, vm, kind, message) VALUES (?, ?, ?, ?)",
			       -1, &st, NULL))
		return db_err(d, "event");
	sqlite3_bind_int64(st, 1, time_ms);
	if (vm)
		sqlite3_bind_text(st, 2, vm, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, message, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_err(d, "event");
	/* Bounded: the oldest rows go (ids only grow: AUTOINCREMENT). */
	if (sqlite3_last_insert_rowid(d->db) % 64 == 0) {
		char sql[96];
		snprintf(sql, sizeof(sql), "DELETE FROM events WHERE id <= %lld",
			 (long long)sqlite3_last_insert_rowid(d->db) - STORE_EVENTS_MAX);
		return exec(d, sql);
	}
	return 0;
}

json_t *store_events(struct mabod *d, int limit)
{
	sqlite3_stmt *st;
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	if (sqlite3_prepare_v2(d->db,
			       "SELECT id, time, vm, kind, message FROM (SELECT * FROM events "
			       "ORDER BY id DESC LIMIT ?) ORDER BY id",
			       -1, &st, NULL)) {
		db_err(d, "events");
		json_decref(arr);
		return NULL;
	}
	sqlite3_bind_int(st, 1, limit);
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *e = json_pack("{s:I, s:I, s:s?, s:s, s:s}", "id",
				      (json_int_t)sqlite3_column_int64(st, 0), "time_ms",
				      (json_int_t)sqlite3_column_int64(st, 1), "vm",
				      (const char *)sqlite3_column_text(st, 2), "kind",
				      (const char *)sqlite3_column_text(st, 3), "message",
				      (const char *)sqlite3_column_text(st, 4));
		if (e)
			json_array_append_new(arr, e);
	}
	sqlite3_finalize(st);
	return arr;
}
