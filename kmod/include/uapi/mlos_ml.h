/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * mlos_ml.h - the ABI of /dev/mlos-ml, the MLOS inference helper device.
 *
 * This file is the one definition of the ABI: the kernel module includes it, and the Python
 * binding (kernel_shim) is generated from it by cffi. Only fixed-width types, pointers carried
 * as __u64, explicit padding, and a leading size word in every argument struct so the ABI can
 * grow: the module accepts any size from the first published one up to its own, zero-filling
 * what an older caller did not send, and refuses non-zero bytes it does not know.
 *
 * Objects:
 *  - buffers: page-backed memory a process allocates (TENSOR_PIN), maps with mmap() at the
 *    returned offset, and that another process maps by handle + random 64-bit token
 *    (TENSOR_MAP): zero-copy tensors between client and server. A buffer lives while any
 *    open file references it, and is freed when the last one unpins it or closes.
 *  - scheduling priority: a thread asks for an inference priority class; the module applies
 *    it within the bound its module parameters allow, and reverts it on request or release.
 *  - a request queue: clients submit (INFERENCE_START) and wait (INFERENCE_WAIT); server
 *    workers take the highest-priority request, FIFO within a priority (REQ_TAKE), and complete
 *    it (REQ_COMPLETE), which wakes the submitter.
 */
#ifndef _UAPI_LINUX_MLOS_ML_H
#define _UAPI_LINUX_MLOS_ML_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MLOS_ML_ABI_VERSION 1
#define MLOS_ML_DEVICE "/dev/mlos-ml"
#define MLOS_ML_IOC_MAGIC 0xB8

/* Inference priority classes, highest first. */
#define MLOS_PRIO_REALTIME 0
#define MLOS_PRIO_HIGH 1
#define MLOS_PRIO_NORMAL 2
#define MLOS_PRIO_BATCH 3
#define MLOS_PRIO_COUNT 4

/* Request states reported by INFERENCE_WAIT (status is the worker's own code when DONE). */
#define MLOS_REQ_DONE 0
#define MLOS_REQ_CANCELLED 1
#define MLOS_REQ_EXPIRED 2

struct mlos_version {
	__u32 size;            /* in: sizeof(struct mlos_version) */
	__u32 abi_version;     /* out: MLOS_ML_ABI_VERSION */
	__u64 pool_limit;      /* out: bytes all buffers together may hold (module parameter) */
	__u32 max_queue;       /* out: requests the queue holds at most (module parameter) */
	__u32 max_priority;    /* out: the highest class an unprivileged caller may take */
};

struct mlos_tensor_pin {        /* allocate a buffer */
	__u32 size;            /* in: sizeof(struct mlos_tensor_pin) */
	__u32 flags;           /* in: 0 (no flag is defined yet; any bit set gives -EINVAL) */
	__u64 length;          /* in: bytes, > 0; rounded up to pages */
	__u64 handle;          /* out: the buffer's id, never reused while the module is loaded */
	__u64 token;           /* out: random secret another process needs to map the buffer */
	__u64 mmap_offset;     /* out: pass to mmap() on this file to map the buffer */
};

struct mlos_tensor_map {        /* reference another process's buffer */
	__u32 size;
	__u32 __pad;
	__u64 handle;          /* in */
	__u64 token;           /* in: must match, else -EACCES */
	__u64 length;          /* out: the buffer's length in bytes */
	__u64 mmap_offset;     /* out: pass to mmap() on this file */
};

struct mlos_tensor_unpin {      /* drop this file's reference to a buffer */
	__u32 size;
	__u32 __pad;
	__u64 handle;          /* in */
};

struct mlos_priority {
	__u32 size;
	__u32 priority;        /* in: MLOS_PRIO_* */
	__s32 nice;            /* out: the nice value applied to the calling thread */
	__u32 policy;          /* out: the scheduling policy applied (SCHED_NORMAL, SCHED_FIFO...) */
};

struct mlos_inference_start {   /* submit a request */
	__u32 size;
	__u32 priority;        /* in: MLOS_PRIO_* */
	__u64 model_id;        /* in: opaque id of the model (e.g. a hash of its name) */
	__u64 input_handle;    /* in: a buffer this file references */
	__u64 output_handle;   /* in: a buffer this file references */
	__u64 deadline_ns;     /* in: CLOCK_MONOTONIC; 0 for none; expired requests are not handed out */
	__u64 user_data;       /* in: opaque, given back to the worker */
	__u64 request_id;      /* out */
};

struct mlos_inference_wait {    /* the submitter waits for its request */
	__u32 size;
	__u32 __pad;
	__u64 request_id;      /* in */
	__u64 timeout_ns;      /* in: 0 waits forever (interruptible by signals) */
	__u32 state;           /* out: MLOS_REQ_* */
	__s32 status;          /* out: the worker's status when DONE */
};

struct mlos_req_take {          /* a server worker takes the next request */
	__u32 size;
	__u32 __pad;
	__u64 timeout_ns;      /* in: 0 waits forever (interruptible); -ETIMEDOUT when it runs out */
	__u64 request_id;      /* out */
	__u64 model_id;        /* out */
	__u64 input_handle;    /* out: the worker maps it with TENSOR_MAP and the tokens below */
	__u64 input_token;     /* out */
	__u64 output_handle;   /* out */
	__u64 output_token;    /* out */
	__u64 deadline_ns;     /* out */
	__u64 user_data;       /* out */
	__u32 priority;        /* out */
	__u32 submitter_pid;   /* out: tgid of the submitter */
};

struct mlos_req_complete {
	__u32 size;
	__s32 status;          /* in: 0 for success, a negative errno otherwise */
	__u64 request_id;      /* in: a request this file took */
};

struct mlos_req_cancel {
	__u32 size;
	__u32 __pad;
	__u64 request_id;      /* in: a request this file submitted */
};

struct mlos_stats {
	__u32 size;
	__u32 __pad;
	__u64 buffers;                    /* live buffers */
	__u64 bytes;                      /* bytes they hold */
	__u64 peak_bytes;
	__u64 queued[MLOS_PRIO_COUNT];    /* requests waiting, per priority */
	__u64 in_flight;                  /* taken by a worker, not completed */
	__u64 submitted;
	__u64 completed;
	__u64 cancelled;
	__u64 expired;
	__u64 allocs;
	__u64 frees;
};

#define MLOS_VERSION          _IOWR(MLOS_ML_IOC_MAGIC, 0x00, struct mlos_version)
#define MLOS_TENSOR_PIN       _IOWR(MLOS_ML_IOC_MAGIC, 0x01, struct mlos_tensor_pin)
#define MLOS_TENSOR_MAP       _IOWR(MLOS_ML_IOC_MAGIC, 0x02, struct mlos_tensor_map)
#define MLOS_TENSOR_UNPIN     _IOW(MLOS_ML_IOC_MAGIC, 0x03, struct mlos_tensor_unpin)
#define MLOS_SET_PRIORITY     _IOWR(MLOS_ML_IOC_MAGIC, 0x04, struct mlos_priority)
#define MLOS_RESET_PRIORITY   _IO(MLOS_ML_IOC_MAGIC, 0x05)
#define MLOS_INFERENCE_START  _IOWR(MLOS_ML_IOC_MAGIC, 0x06, struct mlos_inference_start)
#define MLOS_INFERENCE_WAIT   _IOWR(MLOS_ML_IOC_MAGIC, 0x07, struct mlos_inference_wait)
#define MLOS_REQ_TAKE         _IOWR(MLOS_ML_IOC_MAGIC, 0x08, struct mlos_req_take)
#define MLOS_REQ_COMPLETE     _IOW(MLOS_ML_IOC_MAGIC, 0x09, struct mlos_req_complete)
#define MLOS_REQ_CANCEL       _IOW(MLOS_ML_IOC_MAGIC, 0x0A, struct mlos_req_cancel)
#define MLOS_STATS            _IOWR(MLOS_ML_IOC_MAGIC, 0x0B, struct mlos_stats)

#endif /* _UAPI_LINUX_MLOS_ML_H */
