/*
 * sqlite_pod.c - the "realistic" pod: SQLite, compiled to wasm32-wasi.
 *
 * Linked with the SQLite amalgamation (sqlite3.c, fetched by examples/build.py), this
 * makes a module of about 1 MB that does real work at start-up, for start-up latency
 * benchmarks.
 *
 *   sqlite [ROWS]         in an in-memory database: create a table, insert ROWS rows
 *                         (default 1000) in one transaction with a prepared statement,
 *                         index it, run a few aggregate queries and print the results
 *   sqlite SQL [SQL...]   run each argument as SQL against an in-memory database and
 *                         print every result row as "col = value | col = value"
 *
 * Exits 0 on success, 1 on an SQL error (the message goes to stderr), 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>

#include "sqlite3.h"

static int fail(sqlite3 *db, const char *what) {
    fprintf(stderr, "sqlite: %s: %s\n", what, sqlite3_errmsg(db));
    sqlite3_close(db);
    return 1;
}

/* sqlite3_exec callback: print one result row. */
static int print_row(void *unused, int ncol, char **values, char **names) {
    (void)unused;
    for (int i = 0; i < ncol; i++) {
        printf("%s%s = %s", i ? " | " : "", names[i], values[i] ? values[i] : "NULL");
    }
    putchar('\n');
    return 0;
}

static int run_sql(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, print_row, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s\n", err ? err : "error");
        sqlite3_free(err);
        return 1;
    }
    return 0;
}

static int demo(sqlite3 *db, long rows) {
    static const char *const cities[] = {"Lisbon", "Oslo", "Kyoto", "Lima", "Accra"};
    sqlite3_stmt *ins;
    if (sqlite3_exec(db,
                     "CREATE TABLE readings(id INTEGER PRIMARY KEY, city TEXT NOT NULL,"
                     " celsius REAL NOT NULL);",
                     NULL, NULL, NULL) != SQLITE_OK) {
        return fail(db, "create table");
    }
    if (sqlite3_prepare_v2(db, "INSERT INTO readings(city, celsius) VALUES (?, ?);", -1, &ins,
                           NULL) != SQLITE_OK) {
        return fail(db, "prepare");
    }
    sqlite3_exec(db, "BEGIN;", NULL, NULL, NULL);
    unsigned seed = 12345; /* a fixed LCG, so every run prints the same numbers */
    for (long i = 0; i < rows; i++) {
        seed = seed * 1103515245u + 12345u;
        sqlite3_bind_text(ins, 1, cities[(seed >> 16) % 5], -1, SQLITE_STATIC);
        sqlite3_bind_double(ins, 2, (double)((seed >> 8) % 4000) / 100.0 - 5.0);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            sqlite3_finalize(ins);
            return fail(db, "insert");
        }
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    sqlite3_exec(db, "COMMIT; CREATE INDEX readings_city ON readings(city);", NULL, NULL,
                 NULL);

    printf("sqlite %s, in-memory database, %ld rows\n", sqlite3_libversion(), rows);
    return run_sql(db,
                   "SELECT count(*) AS rows, round(avg(celsius), 2) AS avg_c,"
                   " min(celsius) AS min_c, max(celsius) AS max_c FROM readings;"
                   "SELECT city, count(*) AS n, round(avg(celsius), 2) AS avg_c"
                   " FROM readings GROUP BY city ORDER BY avg_c DESC;"
                   "SELECT id, city, celsius FROM readings ORDER BY celsius DESC, id LIMIT 3;");
}

int main(int argc, char **argv) {
    long rows = 1000;
    int sql_mode = 0;
    if (argc > 1) {
        char *end;
        rows = strtol(argv[1], &end, 10);
        sql_mode = *argv[1] == '\0' || *end != '\0';
        if (!sql_mode && rows < 0) {
            fprintf(stderr, "usage: sqlite [ROWS] | sqlite SQL [SQL...]\n");
            return 2;
        }
    }
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) {
        return fail(db, "open");
    }
    int rc = 0;
    if (sql_mode) {
        for (int i = 1; i < argc && rc == 0; i++) {
            rc = run_sql(db, argv[i]);
        }
    } else {
        rc = demo(db, rows);
    }
    sqlite3_close(db);
    fflush(stdout);
    return rc;
}
