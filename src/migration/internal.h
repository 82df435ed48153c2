/* What the migration code's files share; migration.h is the interface to the rest of the
 * VMM. These were static functions of one file before it was split along its seams:
 * each keeps its name and is declared here, under the file that defines it. */
#ifndef MABO_MIGRATION_INTERNAL_H
#define MABO_MIGRATION_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <zstd.h>

#include "core/vm.h"
#include "migration/migration.h"
#include "migration/sbuf.h"
#include "migration/stream.h"

struct mig_link;

#define CONFIG_VERSION 1
#define PAGES_VERSION 1
#define CLOCK_VERSION 1
#define DEVICES_VERSION 1
/* A CPU record is a hart's state: its version is the layout the machine's save_cpu writes
 * (vm_state_ops.cpu_version), and every older layout still loads. */

#define PAGE_RAW 0
#define PAGE_ZERO 1
#define PAGE_ZSTD 2

#define PAGES_RECORD_BYTES (1U << 20)
/* The longest guest uptime a state may carry: 100 years of mtime ticks. */
#define CLOCK_MAX_TICKS (100ULL * 36525 * 864 * VM_TIMEBASE_HZ)
#define DEFAULT_DOWNTIME_MS 300
#define MAX_PASSES 60
#define IO_TIMEOUT_S 10
#define QUIESCE_TIMEOUT_NS (30ULL * 1000000000ULL)
/* After a successful migration, the source waits this long for a client to read the
 * final status before it exits. */
#define DONE_LINGER_NS (5ULL * 1000000000ULL)

struct migration {
	struct vm *vm;
	struct mig_link *link; /* TLS on migration connections; NULL: none */
	bool insecure;	       /* --migration-insecure: TCP in clear is allowed */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool thread_started;
	bool busy; /* a job runs */
	struct migrate_params params;
	char snapshot_path[4096];
	bool is_snapshot;
	struct migrate_status st; /* under lock */
	uint64_t start_ns;
	bool done_read;	       /* a client read the final status */
	struct stream *stream; /* the job's, while it runs (for cancel) */
	volatile int cancel;
	volatile int quit; /* this VMM ends: a committed job stops trying to reach the peer */
	volatile int to_postcopy; /* the user asked to switch to post-copy */
	bool committing;	  /* the destination has the VM: too late to cancel */
	struct dest *dest;	  /* the destination side, once its VM runs (migration_incoming) */
	migration_done_fn done;	  /* the snapshot's caller, told when it ends */
	void *done_opaque;

	/* Auto-converge: a thread that holds the vCPUs throttle_pct % of the time. */
	pthread_t throttle_thread;
	bool throttle_running;
	volatile unsigned throttle_pct;
	volatile bool throttle_stop;
};

struct page_sender {
	struct stream *s;
	struct sbuf rec;
	ZSTD_CCtx *zctx; /* NULL: no compression */
	uint8_t zbuf[PAGE_SIZE + 512];
	uint64_t pages, zero_pages;
};

#define PAGEMAP_CHUNK 4096 /* pages per read */

struct pagemap {
	int fd;
	uint64_t first; /* page number of ent[0] */
	uint64_t count;
	uint64_t ent[PAGEMAP_CHUNK];
};

struct loader {
	struct vm *vm;
	ZSTD_DCtx *dctx;
	bool have_config, have_clock, have_devices;
	uint8_t *cpu[VM_MAX_CPUS];
	uint32_t cpu_len[VM_MAX_CPUS];
	uint32_t cpu_ver[VM_MAX_CPUS];
	uint8_t *devices;
	uint32_t devices_len;
	uint64_t clock_mtime, clock_realtime, clock_pause_ns;
	unsigned passes;
	struct stream *ack; /* migration: where PASS_ACK goes; NULL for a snapshot */
	uint64_t *written;  /* pages written so far (others are still zero), or NULL */
	uint64_t *need;	    /* post-copy: the pages still to come (PC_START), or NULL */
	char why[200];
};

/* ---- The destination once its vCPUs run ----
 *
 * The connection stays up until the source has nothing more to say: at once after a
 * pre-copy, once every page is in after a post-copy. While the link is down the source
 * reconnects to the listening socket (RESUME with the migration's id); a post-copy guest
 * waits meanwhile on the pages it lacks, and nothing else.
 *
 * Post-copy: guest RAM is registered with userfaultfd. A vCPU, an I/O thread or the event
 * loop touching a page that is not in yet sleeps in the kernel; the fault thread asks the
 * source for it (PC_REQ) and the connection thread places pages as they come (UFFDIO_COPY,
 * which wakes the sleepers). have[] has a bit per page that is current here; a current
 * page that was never written (the source said zero) is mapped as zeros on its fault. */

/* Pre-copy: how long a source that lost the link may come back for its answer. */
#define RECONNECT_WINDOW_NS (60ULL * 1000000000ULL)
#define REQ_BATCH 64

struct dest {
	struct vm *vm;
	struct mig_link *link; /* the VMM's (struct migration owns it) */
	uint64_t id;
	uint64_t token; /* the source's (REC_SOURCE; 0 before version 3): proves an ABANDON */
	uint64_t t_run;
	bool postcopy;
	int lfd; /* listening, for the source to reconnect */
	char unix_path[108];
	int stop_efd;
	pthread_mutex_t lock; /* fd and writes on it (w); requested[] */
	int fd;		      /* -1 while the link is down */
	struct stream w;      /* writes on fd */
	int uffd;
	uint64_t *have;	     /* atomic bit operations */
	uint64_t *requested; /* faulted on (asked for, again after a reconnection) */
	uint64_t npages, words;
	_Atomic uint64_t missing;
	_Atomic bool link_up;
	_Atomic bool finished;
	ZSTD_DCtx *dctx;
	pthread_t conn_thread, fault_thread;
	bool conn_started, fault_started;
};

/* Post-copy from the start: how long to watch which pages the guest uses before pausing
 * it, to send those first. */
#define POSTCOPY_WATCH_MS 100

/* Small helpers every side uses. */

static inline uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };
	nanosleep(&ts, NULL);
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static inline int send_record(struct stream *s, uint8_t type, const void *p, uint32_t len)
{
	int err = stream_write_record(s, type, 1, p, len);
	return err ? err : stream_flush(s);
}

/* wire.c */
void config_save(const struct vm *vm, struct sbuf *b);
bool page_is_zero(const uint8_t *p);
int pages_flush(struct page_sender *ps);
int pages_add(struct page_sender *ps, uint64_t idx, const uint8_t *page);
uint64_t pagemap_unbacked(struct pagemap *pm, const struct vm *vm, uint64_t first);
int pages_send_bitmap(struct migration *m, struct page_sender *ps, uint64_t *bitmap);
uint64_t bitmap_count(const uint64_t *bitmap, uint64_t npages);
int write_final_state(struct vm *vm, struct stream *s, uint64_t t_pause);
void loader_free(struct loader *l);
int loader_read(struct loader *l, struct stream *s);
int loader_apply(struct loader *l, uint64_t elapsed_ns);

/* transport.c */
void set_timeouts(int fd, int seconds);
int open_uri(const char *uri, bool listening, char *why, size_t n);
int connect_uri(struct mig_link *link, const char *uri, char *why, size_t n);
void peer_name(int fd, char *buf, size_t n);
int accept_secure(struct mig_link *link, int fd, const char *who);

/* source.c */
int src_resume(struct migration *m, uint64_t id, struct stream *s, uint64_t *t_run, uint64_t *need,
	       size_t words);
void *job_thread(void *arg);
void status_update(struct migration *m, void (*fn)(struct migrate_status *, void *), void *arg);

/* postcopy_src.c */
int src_postcopy(struct migration *m, struct page_sender *ps, struct stream *s, uint64_t id,
		 uint64_t *need, uint64_t *hot);

/* dest.c */
int dest_send(struct dest *d, uint8_t type, const void *p, uint32_t len);
void dest_free(struct dest *d);

/* postcopy_dest.c */
void dest_rerequest(struct dest *d);
void *dest_fault_thread(void *arg);
int dest_pages(struct dest *d, uint8_t *buf, const uint8_t *p, uint32_t len);
int dest_postcopy_setup(struct dest *d, const uint64_t *need, char *why, size_t n);

#endif
