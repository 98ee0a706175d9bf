/*
 * iscsi-load: a small iSCSI load generator on libiscsi's async API.
 *
 * Why it exists: libiscsi's iscsi-perf only reads, Debian's libiscsi-bin has no iscsi-dd
 * and Debian's fio has no libiscsi engine. The benchmark (bench/anchors.py) needs a C
 * client that is independent of datamover's code to drive writes (and, for symmetry,
 * reads) against our target and against tgtd. This program uses nothing but libiscsi.
 *
 *   iscsi-load [-w] [-r] [-H] [-N] [-C] [-b BLOCKS] [-m QD] [-t SECONDS] [-V] [-F] [-i INITIATOR] URL
 *
 *   -w          WRITE(16) (default READ(16))
 *   -r          random LBAs (aligned to the I/O size); default sequential, wrapping
 *   -b BLOCKS   blocks per I/O (default 8)
 *   -m QD       commands in flight (default 32)
 *   -t SECONDS  run time (default 5)
 *   -V          verify: writes stamp every block with its LBA and a run tag; reads check
 *               the stamp (run after a -F fill or a -w run of the same tag)
 *   -F          fill: write the whole LUN once, sequentially, stamped, then exit
 *   -T TAG      the run tag stamped and checked with -V/-F (default 0x5eed)
 *   -H          ask for header digests (CRC32C; libiscsi has no data digests)
 *   -i NAME     initiator name
 *   -N          iscsi_service only called with an event: libiscsi 1.19's iSER transport
 *               fails a call without POLLIN (interop lab, docs/interop.md finding 8)
 *   -C          libiscsi's allocation cache off (iscsi_set_cache_allocations)
 *
 * Last line of output (parsed by bench/anchors.py):
 *   RESULT ios=N bytes=N seconds=F iops=F mib_s=F lat_us=F errors=N verify_errors=N cpu_s=F
 * (cpu_s: this process's CPU time over the timed part only, without login.)
 * Exit status 0 when every command ended GOOD and every checked block matched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

struct slot {
	struct state *st;
	unsigned char *buf;
	struct scsi_iovec iov;   /* libiscsi keeps a pointer to it until the task ends */
	uint64_t lba;
	double started;
	int retry;
};

struct state {
	struct iscsi_context *iscsi;
	int lun;
	uint32_t block_size;
	uint64_t num_blocks;
	uint32_t blocks;         /* per I/O */
	int write;
	int random_io;
	int verify;
	int fill;
	uint64_t tag;
	double deadline;
	uint64_t next_lba;
	uint64_t ios;
	uint64_t bytes;
	uint64_t errors;
	uint64_t verify_errors;
	int unit_attentions;
	double latency_sum;
	int in_flight;
	int stop;
	uint64_t rng;
};

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Every block starts with its LBA and the run tag; the rest is left as it is. */
static void stamp(struct state *st, unsigned char *buf, uint64_t lba)
{
	for (uint32_t i = 0; i < st->blocks; i++) {
		uint64_t words[2] = { lba + i, st->tag };
		memcpy(buf + (size_t)i * st->block_size, words, sizeof(words));
	}
}

static void check(struct state *st, const unsigned char *buf, uint64_t lba)
{
	for (uint32_t i = 0; i < st->blocks; i++) {
		uint64_t words[2];
		memcpy(words, buf + (size_t)i * st->block_size, sizeof(words));
		if (words[0] != lba + i || words[1] != st->tag) {
			if (st->verify_errors < 5)
				fprintf(stderr, "verify: LBA %" PRIu64 " holds stamp (%" PRIu64 ", %#" PRIx64 ")\n",
					lba + i, words[0], words[1]);
			st->verify_errors++;
		}
	}
}

static uint64_t pick_lba(struct state *st)
{
	uint64_t slots = st->num_blocks / st->blocks;
	uint64_t lba;
	if (st->random_io)
		return (xorshift(&st->rng) % slots) * st->blocks;
	lba = st->next_lba;
	st->next_lba += st->blocks;
	if (st->next_lba + st->blocks > st->num_blocks) {
		if (st->fill)
			st->stop = 1;
		st->next_lba = 0;
	}
	return lba;
}

static void issue(struct slot *slot);

static void done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
	struct slot *slot = private_data;
	struct state *st = slot->st;
	struct scsi_task *task = command_data;
	double t = now();
	(void)iscsi;
	st->in_flight--;
	if (status == SCSI_STATUS_CHECK_CONDITION && task && task->sense.key == SCSI_SENSE_UNIT_ATTENTION &&
	    st->unit_attentions++ < 16) {
		/* a new nexus may first see a power-on / reset attention: not an I/O error */
		scsi_free_scsi_task(task);
		slot->retry = 1;  /* the same LBA again */
		issue(slot);
		return;
	}
	if (status != SCSI_STATUS_GOOD) {
		if (st->errors < 5)
			fprintf(stderr, "%s LBA %" PRIu64 " failed: status %d %s\n", st->write ? "WRITE16" : "READ16",
				slot->lba, status, iscsi_get_error(st->iscsi));
		st->errors++;
	} else {
		if (!st->write && st->verify)
			check(st, slot->buf, slot->lba);
		st->ios++;
		st->bytes += (uint64_t)st->blocks * st->block_size;
		st->latency_sum += t - slot->started;
	}
	if (task)
		scsi_free_scsi_task(task);
	if (!st->stop && (st->fill || t < st->deadline) && !st->errors)
		issue(slot);
}

static void issue(struct slot *slot)
{
	struct state *st = slot->st;
	uint32_t len = st->blocks * st->block_size;
	struct scsi_task *task;
	struct scsi_iovec *iov = &slot->iov;

	iov->iov_base = slot->buf;
	iov->iov_len = len;
	if (!slot->retry)
		slot->lba = pick_lba(st);
	slot->retry = 0;
	slot->started = now();
	if (st->write) {
		if (st->verify || st->fill)
			stamp(st, slot->buf, slot->lba);
		task = iscsi_write16_iov_task(st->iscsi, st->lun, slot->lba, NULL, len, st->block_size,
					      0, 0, 0, 0, 0, done, slot, iov, 1);
	} else {
		task = iscsi_read16_iov_task(st->iscsi, st->lun, slot->lba, len, st->block_size,
					     0, 0, 0, 0, 0, done, slot, iov, 1);
	}
	if (task == NULL) {
		fprintf(stderr, "cannot queue a command: %s\n", iscsi_get_error(st->iscsi));
		st->errors++;
		return;
	}
	st->in_flight++;
}

static void usage(void)
{
	fprintf(stderr, "usage: iscsi-load [-w] [-r] [-H] [-N] [-C] [-b BLOCKS] [-m QD] [-t SECONDS] [-V] [-F] [-T TAG] "
			"[-i INITIATOR] iscsi://HOST[:PORT]/IQN/LUN\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct state st = { .blocks = 8, .tag = 0x5eed, .rng = 0x9e3779b97f4a7c15ULL };
	const char *initiator = "iqn.2026-11.org.datamover.bench:iscsi-load";
	int qd = 32, opt, header_digest = 0;
	double seconds = 5;
	int iser_workarounds = 0, no_cache = 0;
	struct iscsi_url *url;
	struct scsi_task *task;
	struct scsi_readcapacity16 *rc16;
	struct slot *slots;
	double started, elapsed, cpu_started, cpu;

	while ((opt = getopt(argc, argv, "wrb:m:t:VFT:i:HNC")) != -1) {
		switch (opt) {
		case 'w': st.write = 1; break;
		case 'r': st.random_io = 1; break;
		case 'b': st.blocks = strtoul(optarg, NULL, 0); break;
		case 'm': qd = atoi(optarg); break;
		case 't': seconds = atof(optarg); break;
		case 'V': st.verify = 1; break;
		case 'F': st.fill = 1; st.write = 1; st.random_io = 0; break;
		case 'T': st.tag = strtoull(optarg, NULL, 0); break;
		case 'i': initiator = optarg; break;
		case 'H': header_digest = 1; break;
		case 'N': iser_workarounds = 1; break;
		case 'C': no_cache = 1; break;
		default: usage();
		}
	}
	if (optind != argc - 1 || st.blocks == 0 || qd <= 0)
		usage();

	st.iscsi = iscsi_create_context(initiator);
	if (st.iscsi == NULL) {
		fprintf(stderr, "cannot create an iSCSI context\n");
		return 1;
	}
	if (no_cache)
		iscsi_set_cache_allocations(st.iscsi, 0);
	url = iscsi_parse_full_url(st.iscsi, argv[optind]);
	if (url == NULL) {
		fprintf(stderr, "bad URL %s: %s\n", argv[optind], iscsi_get_error(st.iscsi));
		return 2;
	}
	iscsi_set_targetname(st.iscsi, url->target);
	iscsi_set_session_type(st.iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(st.iscsi, header_digest ? ISCSI_HEADER_DIGEST_CRC32C : ISCSI_HEADER_DIGEST_NONE);
	if (iscsi_full_connect_sync(st.iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "login to %s failed: %s\n", url->portal, iscsi_get_error(st.iscsi));
		return 1;
	}
	st.lun = url->lun;
	iscsi_destroy_url(url);

	task = iscsi_readcapacity16_sync(st.iscsi, st.lun);
	if (task == NULL || task->status != SCSI_STATUS_GOOD ||
	    (rc16 = scsi_datain_unmarshall(task)) == NULL) {
		fprintf(stderr, "READ CAPACITY(16) failed: %s\n", iscsi_get_error(st.iscsi));
		return 1;
	}
	st.block_size = rc16->block_length;
	st.num_blocks = rc16->returned_lba + 1;
	scsi_free_scsi_task(task);
	if (st.num_blocks < (uint64_t)st.blocks * qd) {
		fprintf(stderr, "LUN of %" PRIu64 " blocks is too small for QD %d x %u blocks\n",
			st.num_blocks, qd, st.blocks);
		return 2;
	}

	slots = calloc(qd, sizeof(*slots));
	for (int i = 0; i < qd; i++) {
		slots[i].st = &st;
		if (posix_memalign((void **)&slots[i].buf, 4096, (size_t)st.blocks * st.block_size) != 0) {
			fprintf(stderr, "out of memory\n");
			return 1;
		}
		memset(slots[i].buf, 0xa5 ^ i, (size_t)st.blocks * st.block_size);
	}

	started = now();
	cpu_started = cpu_now();
	st.deadline = started + seconds;
	for (int i = 0; i < qd && !st.stop; i++)
		issue(&slots[i]);
	while (st.in_flight > 0) {
		struct pollfd pfd = { .fd = iscsi_get_fd(st.iscsi), .events = iscsi_which_events(st.iscsi) };
		int n = poll(&pfd, 1, 1000);
		if (n < 0 && errno != EINTR) {
			perror("poll");
			return 1;
		}
		if (n == 0 && iser_workarounds)
			continue;
		if (iscsi_service(st.iscsi, n > 0 ? pfd.revents : 0) < 0) {
			fprintf(stderr, "iscsi_service: %s\n", iscsi_get_error(st.iscsi));
			return 1;
		}
	}
	elapsed = now() - started;
	cpu = cpu_now() - cpu_started;

	iscsi_logout_sync(st.iscsi);
	iscsi_destroy_context(st.iscsi);
	printf("RESULT ios=%" PRIu64 " bytes=%" PRIu64 " seconds=%.6f iops=%.1f mib_s=%.2f lat_us=%.2f "
	       "errors=%" PRIu64 " verify_errors=%" PRIu64 " cpu_s=%.4f\n",
	       st.ios, st.bytes, elapsed, st.ios / elapsed, st.bytes / elapsed / 1048576.0,
	       st.ios ? st.latency_sum / st.ios * 1e6 : 0.0, st.errors, st.verify_errors, cpu);
	for (int i = 0; i < qd; i++)
		free(slots[i].buf);
	free(slots);
	return st.errors || st.verify_errors ? 1 : 0;
}
