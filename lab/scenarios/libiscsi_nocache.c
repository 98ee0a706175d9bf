/*
 * LD_PRELOAD shim for libiscsi 1.19's iSER read buffers (interop lab, finding 8).
 *
 * libiscsi 1.19 allocates an iSER read buffer of the command's length with iscsi_malloc()
 * and later frees it with iscsi_sfree(), which, with allocation caching on (the default),
 * files it among the fixed-size "small" buffers; a later small allocation then gets a block
 * shorter than it thinks and the heap breaks ("munmap_chunk(): invalid pointer" on the
 * second connect of iscsi-test-cu). Upstream fixed the mismatch in 2024 (commit 2934d64,
 * "Fix pdu indata of iser alloc and free mismatch"). Turning the cache off through
 * libiscsi's own public call, iscsi_set_cache_allocations(ctx, 0), makes iscsi_sfree() a
 * plain free() and sidesteps the bug without changing what goes on the wire.
 *
 * Built by lab/scenarios/support.py (gcc -shared -fPIC) and used only by scenario 3.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

struct iscsi_context;
typedef struct iscsi_context *(*create_context_fn)(const char *);
typedef void (*set_cache_fn)(struct iscsi_context *, int);

struct iscsi_context *iscsi_create_context(const char *initiator_name)
{
	static create_context_fn real_create;
	static set_cache_fn set_cache;
	struct iscsi_context *iscsi;

	if (real_create == NULL) {
		real_create = (create_context_fn)dlsym(RTLD_NEXT, "iscsi_create_context");
		set_cache = (set_cache_fn)dlsym(RTLD_NEXT, "iscsi_set_cache_allocations");
	}
	if (real_create == NULL)
		return NULL;
	iscsi = real_create(initiator_name);
	if (iscsi != NULL && set_cache != NULL)
		set_cache(iscsi, 0);
	return iscsi;
}
