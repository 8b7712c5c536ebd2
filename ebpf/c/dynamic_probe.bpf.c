// SPDX-License-Identifier: GPL-2.0
/*
 * Dynamic probes: one precompiled program per hook kind serves every Tracepoint.
 *
 * The PEM attaches `probe_entry` / `probe_return` to user-space functions with the
 * attachment cookie `probe * 2 + side`, and `probe_tracepoint` to kernel tracepoints
 * with the cookie `probe * 2`; the program looks up what to capture in `probe_configs` and writes one
 * record per hit into `probe_events`. A probe over its event rate, or a full ring
 * buffer, drops the record and counts it: the traced program never waits.
 * Minimum kernel version: 5.15 (attach cookies).
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#include "dynamic_probe.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* replaced by the PEM's setting at load */
} probe_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * PX_MAX_PROBES);
	__type(key, __u32);
	__type(value, struct px_probe_config);
} probe_configs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct px_probe_globals);
} probe_globals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PX_MAX_PROBES);
	__type(key, __u32);
	__type(value, struct px_probe_counters);
} probe_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct px_probe_cgroup_key);
	__type(value, __u8);
} probe_cgroups SEC(".maps");

/* Calls whose entry was recorded and whose return is due, by thread and probe: a return
 * is recorded only if its entry was, so the rate limit bounds both. A plain hash, not an
 * LRU: an LRU may evict live entries early, and each lost one loses a row. */
struct inflight_key {
	__u64 pid_tgid;
	__u32 probe;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct inflight_key);
	__type(value, __u32);
} inflight SEC(".maps");

/* The event as it is assembled: the data has twice the room it may use so that
 * (offset < PX_MAX_DATA) + (length <= PX_MAX_DATA) is provably in bounds. */
struct probe_scratch {
	struct px_probe_event event;
	__u8 data[2 * PX_MAX_DATA];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_scratch);
} scratch SEC(".maps");

static __always_inline int in_scope(__u32 tgid)
{
	__u32 zero = 0;
	struct px_probe_globals *g = bpf_map_lookup_elem(&probe_globals, &zero);
	if (!g || g->self_tgid == tgid)
		return 0;
	return !g->cgroup_id || bpf_get_current_ancestor_cgroup_id(g->cgroup_level) == g->cgroup_id;
}

static __always_inline int comm_matches(const struct px_probe_config *cfg, const char *comm)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (cfg->comm[i] != comm[i])
			return 0;
		if (!comm[i])
			return 1;
	}
	return 1;
}

static __always_inline int cgroup_matches(__u32 probe, const struct px_probe_config *cfg)
{
	struct px_probe_cgroup_key key = {.probe = probe};
#pragma unroll
	for (int i = 0; i < PX_CGROUP_LEVELS; i++) {
		if (!cfg->cgroup_levels[i])
			return 0;
		key.cgroup_id = bpf_get_current_ancestor_cgroup_id(cfg->cgroup_levels[i]);
		if (bpf_map_lookup_elem(&probe_cgroups, &key))
			return 1;
	}
	return 0;
}

/* Admits one more event of `probe` this second, or counts it as dropped. */
static __always_inline int admit(__u32 probe, const struct px_probe_config *cfg, __u64 now)
{
	struct px_probe_counters *c = bpf_map_lookup_elem(&probe_counters, &probe);
	if (!c)
		return 0;
	__u64 second = now / 1000000000ULL;
	if (c->window != second) {
		/* Racy across CPUs by design: at worst a few extra events in the new second. */
		c->window = second;
		c->admitted = 0;
	}
	if (__sync_fetch_and_add(&c->admitted, 1) >= cfg->rate_per_sec) {
		__sync_fetch_and_add(&c->dropped, 1);
		return 0;
	}
	return 1;
}

static __always_inline void count_drop(__u32 probe)
{
	struct px_probe_counters *c = bpf_map_lookup_elem(&probe_counters, &probe);
	if (c)
		__sync_fetch_and_add(&c->dropped, 1);
}

static __always_inline __u64 read_scalar(void *ctx, __u32 offset, __u32 size)
{
	__u64 v = 0;
	if (size > 8)
		size = 8;
	bpf_probe_read_kernel(&v, size, (char *)ctx + offset);
	return v;
}

/* Copies one string or buffer capture into the data at `*used`; returns its value. */
static __always_inline __u64 capture_bytes(void *ctx, const struct px_capture *cap,
					   struct probe_scratch *s, __u32 *used)
{
	__u32 at = *used;
	if (at >= PX_MAX_DATA)
		return 0;
	__u32 max = cap->max_len;
	if (max > PX_MAX_DATA - at)
		max = PX_MAX_DATA - at;
	__u8 *dst = s->data + (at & (PX_MAX_DATA - 1));
	long n = 0;
	if (cap->kind == PX_CAP_INLINE) {
		__u32 len = max & (PX_MAX_DATA - 1);
		if (bpf_probe_read_kernel(dst, len, (char *)ctx + cap->offset) == 0)
			n = len;
	} else if (cap->kind == PX_CAP_DATA_LOC) {
		__u32 loc = (__u32)read_scalar(ctx, cap->offset, 4);
		__u32 len = loc >> 16;
		if (len > max)
			len = max;
		len &= PX_MAX_DATA - 1;
		if (bpf_probe_read_kernel(dst, len, (char *)ctx + (loc & 0xffff)) == 0)
			n = len;
	} else {
		const void *src = (const void *)read_scalar(ctx, cap->offset, 8);
		if (cap->kind == PX_CAP_USER_STR) {
			n = bpf_probe_read_user_str(dst, max & (PX_MAX_DATA - 1), src);
			if (n > 0)
				n -= 1; /* without the NUL */
		} else {
			__u32 len = max;
			if (cap->size_or_flags & PX_CAP_FLAG_LEN) {
				__u64 want = read_scalar(ctx, cap->len_offset, 8);
				if (want < len)
					len = want;
			}
			len &= PX_MAX_DATA - 1;
			if (bpf_probe_read_user(dst, len, src) == 0)
				n = len;
		}
	}
	if (n < 0)
		n = 0;
	*used = at + (__u32)n;
	return ((__u64)at << 32) | (__u32)n;
}

/* Captures what `cfg` asks for and queues the event. */
static __always_inline int record(void *ctx, __u32 config, const struct px_probe_config *cfg,
				  __u64 pid_tgid, __u64 now)
{
	__u32 zero = 0;
	struct probe_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct px_probe_event *e = &s->event;
	e->config = config;
	e->generation = cfg->generation;
	e->tgid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->ktime_ns = now;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__u32 used = 0;
	__u32 n = cfg->n_captures;
	for (__u32 i = 0; i < PX_MAX_CAPTURES; i++) {
		if (i >= n)
			break;
		const struct px_capture *cap = &cfg->captures[i];
		if (cap->kind == PX_CAP_SCALAR)
			e->values[i] = read_scalar(ctx, cap->offset, cap->size_or_flags);
		else if (cap->kind != PX_CAP_NONE)
			e->values[i] = capture_bytes(ctx, cap, s, &used);
		else
			e->values[i] = 0;
	}
	e->data_len = used;
	__u64 size = sizeof(struct px_probe_event) + (used & (2 * PX_MAX_DATA - 1));
	if (size > sizeof(struct probe_scratch))
		size = sizeof(struct probe_scratch);
	return bpf_ringbuf_output(&probe_events, s, size, 0) == 0;
}

/* The filters a probe applies before anything is captured. */
static __always_inline int wanted(__u32 probe, const struct px_probe_config *cfg)
{
	if (!(cfg->flags & PX_PROBE_ACTIVE))
		return 0;
	if (cfg->flags & PX_PROBE_COMM) {
		char comm[16] = {};
		bpf_get_current_comm(comm, sizeof(comm));
		if (!comm_matches(cfg, comm))
			return 0;
	}
	if ((cfg->flags & PX_PROBE_CGROUPS) && !cgroup_matches(probe, cfg))
		return 0;
	return 1;
}

/* Filters, rate-limits and records one hit of the probe side `config`; true when the
 * event was queued. */
static __always_inline int hit(void *ctx, __u32 config, __u64 pid_tgid)
{
	__u32 probe = config / 2;
	if (!in_scope(pid_tgid >> 32))
		return 0;
	struct px_probe_config *cfg = bpf_map_lookup_elem(&probe_configs, &config);
	if (!cfg || !wanted(probe, cfg))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (!admit(probe, cfg, now))
		return 0;
	if (!record(ctx, config, cfg, pid_tgid, now)) {
		count_drop(probe);
		return 0;
	}
	return cfg->flags & PX_PROBE_PAIRED;
}

SEC("uprobe")
int probe_entry(struct pt_regs *ctx)
{
	__u32 config = (__u32)bpf_get_attach_cookie(ctx);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
#ifdef PX_VERIFIER_REJECT_TEST
	/* A read past the end of a map value, with an index the verifier cannot bound. */
	struct px_probe_config *any = bpf_map_lookup_elem(&probe_configs, &config);
	if (any && ((volatile char *)any)[config] == 1)
		return 1;
#endif
	/* A recorded entry whose return is wanted: remember it for the return side. */
	if (hit(ctx, config, pid_tgid)) {
		struct inflight_key key = {.pid_tgid = pid_tgid, .probe = config / 2};
		__u32 *depth = bpf_map_lookup_elem(&inflight, &key);
		if (depth) {
			__sync_fetch_and_add(depth, 1);
		} else {
			__u32 one = 1;
			bpf_map_update_elem(&inflight, &key, &one, BPF_ANY);
		}
	}
	return 0;
}

SEC("uretprobe")
int probe_return(struct pt_regs *ctx)
{
	__u32 config = (__u32)bpf_get_attach_cookie(ctx);
	__u32 probe = config / 2;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct inflight_key key = {.pid_tgid = pid_tgid, .probe = probe};
	__u32 *depth = bpf_map_lookup_elem(&inflight, &key);
	if (!depth)
		return 0; /* its entry was filtered out, over the rate, or not queued */
	if (*depth <= 1)
		bpf_map_delete_elem(&inflight, &key);
	else
		__sync_fetch_and_add(depth, -1);
	struct px_probe_config *cfg = bpf_map_lookup_elem(&probe_configs, &config);
	if (!cfg || !(cfg->flags & PX_PROBE_ACTIVE))
		return 0;
	if (!record(ctx, config, cfg, pid_tgid, bpf_ktime_get_ns()))
		count_drop(probe);
	return 0;
}

/* Kernel tracepoints carry the probe in the attach cookie too: the first 8 bytes of a
 * tracepoint's context are overwritten with a pt_regs pointer before BPF runs, so the
 * event id in `common_type` cannot tell tracepoints apart. */
SEC("tracepoint")
int probe_tracepoint(void *ctx)
{
	hit(ctx, (__u32)bpf_get_attach_cookie(ctx), bpf_get_current_pid_tgid());
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
