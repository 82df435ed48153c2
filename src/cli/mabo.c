/* mabo: the command-line client of mabo-vmm's control socket (docs/api.md).
 *
 *   mabo --api-socket PATH info|pause|resume|cancel|postcopy|powerdown|quit|migrate-status
 *   mabo --api-socket PATH snapshot FILE
 *   mabo --api-socket PATH migrate URI [--downtime-ms N] [--bandwidth MIBPS] [--postcopy]
 *        [--compress]
 *
 * migrate asks for migration events on its connection, draws a progress line on stderr when
 * stderr is a terminal, and prints the outcome as one JSON line on stdout; Ctrl-C cancels
 * the migration and waits for the VMM to confirm (a second Ctrl-C gives up waiting).
 * Exit status: 0 done (for migrate: the VM runs on the destination), 1 failed or refused,
 * 2 bad usage. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/vm.h"
#include "core/json.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
/* Longest line accepted from the VMM. */
#define MABO_MAX_LINE (1u << 20)
/* Without a word from the VMM for this long during a migration, ask for the status. */
#define MABO_QUIET_MS 2000

static void err_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr, after clearing a progress line that may be there. */
static bool progress_shown;

static void err_line(const char *fmt, ...)
{
	va_list ap;
	if (progress_shown) {
		fputs("\r\033[K", stderr);
		progress_shown = false;
	}
	fputs("mabo: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mabo --api-socket PATH COMMAND [ARGS]\n"
		"Controls a running mabo-vmm through its control socket (mabo-vmm "
		"--api-socket).\n\n"
		"Commands:\n"
		"  info                 print the VM's state as one JSON object\n"
		"  pause                stop the vCPUs\n"
		"  resume               let them run again\n"
		"  snapshot FILE        save the VM to FILE\n"
		"  migrate URI          move the VM to a destination mabo-vmm started with\n"
		"                       --incoming; URI is tcp:HOST:PORT or unix:PATH\n"
		"    --downtime-ms N    the downtime target (default 300)\n"
		"    --bandwidth MIBPS  cap the link at MIBPS MiB/s (default: no cap)\n"
		"    --postcopy         post-copy: run on the destination at once, pages follow\n"
		"    --compress         compress pages\n"
		"  migrate-status       print the migration's status as one JSON object\n"
		"  cancel               cancel the running migration\n"
		"  postcopy             switch the running migration to post-copy now\n"
		"  powerdown            press the guest's power button: the guest powers off\n"
		"                       (mabo-vmm ends when it has)\n"
		"  quit                 stop the VM and end mabo-vmm (a power cut for the "
		"guest)\n\n"
		"Options:\n"
		"  --api-socket PATH    the control socket (or $MABO_API_SOCKET)\n"
		"  -h, --help           this help\n\n"
		"migrate shows its progress on stderr when that is a terminal, prints the outcome "
		"as\n"
		"one JSON line (status, total_ms, downtime_ms, bytes, rounds, ...) on stdout, and\n"
		"cancels the migration on Ctrl-C.\n"
		"Exit status: 0 done (migrate: the VM runs on the destination); 1 failed or\n"
		"refused; 2 bad usage.\n\n"
		"Through the host daemon mabod (docs/mabod.md):\n"
		"  mabo [--connect unix:PATH] vm create NAME [--autostart] [--restart "
		"never|on-failure|always]\n"
		"       --kernel FILE [--initramfs FILE] [--firmware FILE|none] [--cmdline STR]\n"
		"       [--memory SIZE] [--cpus N] [--disk path=FILE[,readonly=on][,id=ID]]...\n"
		"       [--net user[,hostfwd=RULE]...[,mac=MAC] | --net tap=IFNAME[,mac=MAC]]...\n"
		"       [--rng] [--console serial|virtio] [--no-reboot]\n"
		"  mabo vm list [--json] | info NAME [--json] | log NAME\n"
		"  mabo vm start|kill|pause|resume|delete NAME | stop NAME [--timeout SECONDS]\n"
		"  mabo vm snapshot|restore NAME FILE [--json]\n"
		"  mabo host | events [--limit N] | events --follow\n"
		"--connect defaults to $MABO_CONNECT, else unix:/run/maboroshi/mabod.sock.\n");
}

/* The connection: a socket and what has been read of the current line. */
struct conn {
	int fd;
	char *buf;
	size_t len, cap, consumed;
};

static int conn_open(struct conn *c, const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	memset(c, 0, sizeof(*c));
	if (strlen(path) >= sizeof(addr.sun_path)) {
		err_line("api socket '%s': path longer than %zu bytes", path,
			 sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		int e = errno;
		err_line("api socket '%s': %s", path, strerror(e));
		return -e;
	}
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		int e = errno;
		err_line("cannot connect to '%s': %s%s", path, strerror(e),
			 e == ENOENT || e == ECONNREFUSED
				 ? " (is mabo-vmm running with --api-socket?)"
				 : "");
		close(c->fd);
		return -e;
	}
	return 0;
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c->buf);
}

/* Sends one request line. */
static int conn_send(struct conn *c, const char *doc)
{
	size_t n = strlen(doc);
	char *line = malloc(n + 1);
	if (!line)
		return -ENOMEM;
	memcpy(line, doc, n);
	line[n] = '\n';
	size_t off = 0;
	int ret = 0;
	while (off <= n) {
		ssize_t w = send(c->fd, line + off, n + 1 - off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		off += (size_t)w;
	}
	free(line);
	return ret;
}

/* Reads one line: 1 with *line set (valid until the next call), 0 when timeout_ms passed
 * (or a signal came) first, -EPIPE when the VMM closed the connection, -E2BIG for a line
 * over MABO_MAX_LINE, or -errno. timeout_ms < 0 waits for ever. */
static int conn_line(struct conn *c, int timeout_ms, char **line)
{
	if (c->consumed) {
		memmove(c->buf, c->buf + c->consumed, c->len - c->consumed);
		c->len -= c->consumed;
		c->consumed = 0;
	}
	for (;;) {
		char *nl = c->buf ? memchr(c->buf, '\n', c->len) : NULL;
		if (nl) {
			*nl = '\0';
			c->consumed = (size_t)(nl - c->buf) + 1;
			*line = c->buf;
			return 1;
		}
		if (c->len >= MABO_MAX_LINE)
			return -E2BIG;
		if (c->cap - c->len < 4096) {
			size_t cap = c->cap ? c->cap * 2 : 8192;
			char *p = realloc(c->buf, cap);
			if (!p)
				return -ENOMEM;
			c->buf = p;
			c->cap = cap;
		}
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int r = poll(&pfd, 1, timeout_ms);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			return 0;
		ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n < 0) {
			if (errno == EINTR)
				return 0;
			return errno == ECONNRESET ? -EPIPE : -errno;
		}
		if (n == 0)
			return -EPIPE;
		c->len += (size_t)n;
	}
}

static const char *conn_strerror(int err)
{
	switch (err) {
	case -EPIPE: return "the VMM closed the connection";
	case -E2BIG: return "the VMM sent a line too long";
	default: return strerror(-err);
	}
}

/* Parses a line from the VMM; NULL (after one line on stderr) unless it is an object. */
static struct json_value *parse_reply(const char *line)
{
	struct json_value *v;
	struct json_error jerr;

	if (json_parse(line, strlen(line), NULL, &v, &jerr) < 0) {
		err_line("bad reply from the VMM: %s at byte %zu", jerr.msg, jerr.pos);
		return NULL;
	}
	if (v->type != JSON_OBJECT) {
		err_line("bad reply from the VMM: not a JSON object");
		json_free(v);
		return NULL;
	}
	return v;
}

/* Prints object v as one JSON line on stdout, without the member skip. */
static int print_object(const struct json_value *v, const char *skip)
{
	struct json_writer w;
	int ret;

	json_writer_init(&w);
	json_begin_object(&w);
	for (size_t i = 0; i < v->object.n; i++) {
		const struct json_member *m = &v->object.members[i];
		if (strcmp(m->key, skip) == 0)
			continue;
		json_key(&w, m->key);
		json_value(&w, &m->value);
	}
	json_end_object(&w);
	ret = json_writer_error(&w);
	if (!ret) {
		printf("%s\n", json_writer_str(&w));
		fflush(stdout);
	}
	json_writer_free(&w);
	return ret;
}

/* Waits for the response to the last request (an object with "ok"), skipping events.
 * Returns it, or NULL after one line on stderr. */
static struct json_value *wait_response(struct conn *c, const char *cmd)
{
	for (;;) {
		char *line;
		int r = conn_line(c, -1, &line);
		if (r == 0)
			continue;
		if (r < 0) {
			err_line("%s: %s", cmd, conn_strerror(r));
			return NULL;
		}
		struct json_value *v = parse_reply(line);
		if (!v)
			return NULL;
		if (json_get(v, "ok"))
			return v;
		json_free(v);
	}
}

/* Sends a request and checks its response; returns it (ok true) or NULL after one line. */
static struct json_value *request(struct conn *c, const char *cmd, const char *doc)
{
	int ret = conn_send(c, doc);
	if (ret < 0) {
		err_line("%s: cannot send the request: %s", cmd, conn_strerror(ret));
		return NULL;
	}
	struct json_value *v = wait_response(c, cmd);
	if (!v)
		return NULL;
	const struct json_value *ok = json_get(v, "ok");
	if (ok->type != JSON_BOOL || !ok->boolean) {
		const char *msg = json_get_string(v, "error");
		err_line("%s", msg ? msg : "the VMM refused the request");
		json_free(v);
		return NULL;
	}
	return v;
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted++;
}

static uint64_t get_u64(const struct json_value *v, const char *key)
{
	const struct json_value *n = json_get(v, key);
	if (!n || n->type != JSON_NUMBER || !(n->number.d >= 0))
		return 0;
	return n->number.is_int ? (uint64_t)n->number.i : (uint64_t)n->number.d;
}

static double get_double(const struct json_value *v, const char *key)
{
	const struct json_value *n = json_get(v, key);
	return n && n->type == JSON_NUMBER ? n->number.d : 0;
}

/* The progress line, redrawn in place on stderr. */
static void draw_progress(const struct json_value *ev, bool cancelling)
{
	char bar[32] = "";
	uint64_t total = get_u64(ev, "total_pages"), remaining = get_u64(ev, "remaining_pages");
	const struct json_value *post = json_get(ev, "postcopy_active");

	if (total) {
		enum { WIDTH = 20 };
		uint64_t done = remaining < total ? total - remaining : 0;
		int fill = (int)(done * WIDTH / total);
		bar[0] = '[';
		for (int i = 0; i < WIDTH; i++)
			bar[1 + i] = i < fill ? '#' : '.';
		snprintf(bar + 1 + WIDTH, sizeof(bar) - 1 - WIDTH, "] %3d%% ",
			 (int)(done * 100 / total));
	}
	fprintf(stderr,
		"\r\033[K%s %llu %s remaining %llu pages, dirty %llu pages/s, "
		"%.1f MiB/s, downtime ~%llu ms%s",
		post && post->type == JSON_BOOL && post->boolean ? "postcopy, pass" : "pass",
		(unsigned long long)get_u64(ev, "pass"), bar, (unsigned long long)remaining,
		(unsigned long long)get_u64(ev, "dirty_rate_pps"),
		get_double(ev, "bandwidth_mibps"),
		(unsigned long long)get_u64(ev, "expected_downtime_ms"),
		cancelling ? " (cancelling)" : "");
	fflush(stderr);
	progress_shown = true;
}

struct migrate_opts {
	const char *uri;
	long downtime_ms; /* -1: the VMM's default */
	long bandwidth;	  /* -1: none given */
	bool postcopy, compress;
};

static int cmd_migrate(struct conn *c, const struct migrate_opts *o)
{
	bool tty = isatty(STDERR_FILENO);
	bool cancel_sent = false;
	struct json_writer w;
	int ret = EXIT_FAILED;

	json_writer_init(&w);
	json_begin_object(&w);
	json_kv_string(&w, "cmd", "migrate");
	/* The VMM may run in another directory: a unix: socket goes as an absolute path. */
	char abs[PATH_MAX + 8];
	const char *uri = o->uri;
	if (strncmp(uri, "unix:", 5) == 0 && uri[5] && uri[5] != '/' && getcwd(abs + 5, PATH_MAX) &&
	    strlen(abs + 5) + 1 + strlen(uri + 5) < PATH_MAX) {
		memcpy(abs, "unix:", 5);
		strcat(abs, "/");
		strcat(abs, uri + 5);
		uri = abs;
	}
	json_kv_string(&w, "uri", uri);
	if (o->downtime_ms >= 0)
		json_kv_int(&w, "downtime_ms", o->downtime_ms);
	if (o->bandwidth >= 0)
		json_kv_int(&w, "bandwidth_mibps", o->bandwidth);
	json_kv_bool(&w, "postcopy", o->postcopy);
	json_kv_bool(&w, "compress", o->compress);
	json_kv_bool(&w, "events", true);
	json_end_object(&w);
	if (json_writer_error(&w)) {
		err_line("migrate: out of memory");
		json_writer_free(&w);
		return EXIT_FAILED;
	}

	struct sigaction sa = { .sa_handler = on_sigint };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: poll returns at once */
	sigaction(SIGTERM, &sa, NULL);

	struct json_value *v = request(c, "migrate", json_writer_str(&w));
	json_writer_free(&w);
	if (!v)
		return EXIT_FAILED;
	json_free(v);

	int quiet_ms = 0;
	for (;;) {
		if (interrupted > 1) {
			err_line("migrate: interrupted again: not waiting for the outcome");
			return 130;
		}
		if (interrupted && !cancel_sent) {
			cancel_sent = true;
			if (conn_send(c, "{\"cmd\":\"cancel\"}") < 0) {
				err_line("migrate: cannot send cancel: %s", strerror(errno));
				return EXIT_FAILED;
			}
			if (!tty)
				err_line("migrate: cancelling (Ctrl-C again to stop waiting)");
		}
		char *line;
		int r = conn_line(c, 200, &line);
		if (r == 0) {
			/* Events stopped coming (a VMM that does not stream them): ask. */
			quiet_ms += 200;
			if (quiet_ms >= MABO_QUIET_MS) {
				quiet_ms = 0;
				if (conn_send(c, "{\"cmd\":\"migrate-status\",\"events\":true}") <
				    0) {
					err_line("migrate: %s", strerror(errno));
					return EXIT_FAILED;
				}
			}
			continue;
		}
		if (r < 0) {
			err_line("migrate: %s before the migration ended; its outcome is unknown",
				 conn_strerror(r));
			return EXIT_FAILED;
		}
		quiet_ms = 0;
		v = parse_reply(line);
		if (!v)
			return EXIT_FAILED;
		const char *status = json_get_string(v, "status");
		const struct json_value *ok = json_get(v, "ok");
		if (ok) {
			/* The answer to cancel or to migrate-status. */
			if (ok->type == JSON_BOOL && !ok->boolean) {
				const char *msg = json_get_string(v, "error");
				err_line("%s", msg ? msg : "the VMM refused the request");
				json_free(v);
				continue;
			}
			if (!status) {
				json_free(v);
				continue;
			}
		} else {
			const char *event = json_get_string(v, "event");
			if (!event || strcmp(event, "migration") != 0 || !status) {
				json_free(v);
				continue;
			}
		}
		if (strcmp(status, "active") == 0) {
			if (tty)
				draw_progress(v, cancel_sent);
			json_free(v);
			continue;
		}
		/* An outcome. */
		if (progress_shown) {
			fputs("\r\033[K", stderr);
			progress_shown = false;
		}
		if (strcmp(status, "completed") == 0) {
			ret = 0;
		} else {
			const char *msg = json_get_string(v, "error");
			err_line("migrate: %s%s%s", status, msg ? ": " : "", msg ? msg : "");
		}
		print_object(v, ok ? "ok" : "event");
		json_free(v);
		return ret;
	}
}

/* A number option: a non-negative integer up to max. */
static int parse_num(const char *opt, const char *s, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > max || *s == '-' || *s == '+') {
		err_line("%s '%s': must be a whole number from 0 to %ld", opt, s, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	enum { O_SOCKET = 256, O_DOWNTIME, O_BANDWIDTH, O_POSTCOPY, O_COMPRESS };
	static const struct option opts[] = {
		{ "api-socket", required_argument, NULL, O_SOCKET },
		{ "downtime-ms", required_argument, NULL, O_DOWNTIME },
		{ "bandwidth", required_argument, NULL, O_BANDWIDTH },
		{ "postcopy", no_argument, NULL, O_POSTCOPY },
		{ "compress", no_argument, NULL, O_COMPRESS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	/* mabo vm ..., host, events: mabod's REST API (src/cli/vm.c). */
	if (mabo_daemon_command(argc, argv))
		return mabo_daemon_main(argc, argv);
	struct migrate_opts mo = { .downtime_ms = -1, .bandwidth = -1 };
	const char *socket_path = getenv("MABO_API_SOCKET");
	bool migrate_opt = false;

	opterr = 0;
	for (;;) {
		int c = getopt_long(argc, argv, ":h", opts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case O_SOCKET: socket_path = optarg; break;
		case O_DOWNTIME:
			if (parse_num("--downtime-ms", optarg, 60000, &mo.downtime_ms) < 0)
				return EXIT_USAGE;
			if (mo.downtime_ms == 0) {
				err_line("--downtime-ms '0': must be at least 1");
				return EXIT_USAGE;
			}
			migrate_opt = true;
			break;
		case O_BANDWIDTH:
			if (parse_num("--bandwidth", optarg, 1000000, &mo.bandwidth) < 0)
				return EXIT_USAGE;
			migrate_opt = true;
			break;
		case O_POSTCOPY: mo.postcopy = migrate_opt = true; break;
		case O_COMPRESS: mo.compress = migrate_opt = true; break;
		case 'h': usage(stdout); return 0;
		case ':':
			err_line("option '%s' needs a value", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			err_line("unknown option '%s' (see --help)", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		err_line("no command given (see --help)");
		return EXIT_USAGE;
	}
	const char *cmd = argv[optind++];
	int nargs = argc - optind;
	static const char *const simple[] = {
		"info",	    "pause",	 "resume", "cancel",
		"postcopy", "powerdown", "quit",   "migrate-status",
	};
	bool is_simple = false;
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
		is_simple |= strcmp(cmd, simple[i]) == 0;
	int want = is_simple							 ? 0
		   : strcmp(cmd, "snapshot") == 0 || strcmp(cmd, "migrate") == 0 ? 1
										 : -1;
	if (want < 0) {
		err_line("unknown command '%s' (see --help)", cmd);
		return EXIT_USAGE;
	}
	if (nargs != want) {
		if (want)
			err_line("%s: expected %s", cmd,
				 strcmp(cmd, "snapshot") == 0
					 ? "one FILE"
					 : "one URI (tcp:HOST:PORT or unix:PATH)");
		else
			err_line("%s: unexpected argument '%s'", cmd, argv[optind]);
		return EXIT_USAGE;
	}
	if (migrate_opt && strcmp(cmd, "migrate") != 0) {
		err_line(
			"%s: --downtime-ms, --bandwidth, --postcopy and --compress are for migrate",
			cmd);
		return EXIT_USAGE;
	}
	if (!socket_path || !*socket_path) {
		err_line("no control socket: use --api-socket PATH (see --help)");
		return EXIT_USAGE;
	}

	signal(SIGPIPE, SIG_IGN);
	struct conn c;
	if (conn_open(&c, socket_path) < 0)
		return EXIT_FAILED;

	int ret = EXIT_FAILED;
	if (strcmp(cmd, "migrate") == 0) {
		mo.uri = argv[optind];
		ret = cmd_migrate(&c, &mo);
		conn_close(&c);
		return ret;
	}

	struct json_writer w;
	json_writer_init(&w);
	json_begin_object(&w);
	json_kv_string(&w, "cmd", cmd);
	if (strcmp(cmd, "snapshot") == 0) {
		char abs[PATH_MAX];
		const char *path = argv[optind];
		/* The VMM may run in another directory: send an absolute path. */
		if (path[0] != '/' && getcwd(abs, sizeof(abs)) &&
		    strlen(abs) + 1 + strlen(path) < sizeof(abs)) {
			strcat(abs, "/");
			strcat(abs, path);
			path = abs;
		}
		json_kv_string(&w, "path", path);
	}
	json_end_object(&w);
	struct json_value *v = json_writer_error(&w) ? NULL : request(&c, cmd, json_writer_str(&w));
	json_writer_free(&w);
	if (v) {
		ret = 0;
		if (strcmp(cmd, "info") == 0 || strcmp(cmd, "migrate-status") == 0)
			ret = print_object(v, "ok") ? EXIT_FAILED : 0;
		json_free(v);
	}
	conn_close(&c);
	return ret;
}
