/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mlos_internal.h - what the parts of mlos_ml share.
 *
 * Locking (one lock for the whole device):
 *   mlos_lock (a mutex) guards the buffer table, every file's references and request lists,
 *   the priority queues and the counters not kept as atomics.
 *   Order: mmap_lock -> mlos_lock -> {xa_lock, wait-queue locks}. mmap() and the vm_ops run
 *   with mmap_lock held and take mlos_lock (or only atomics), so nothing may touch user
 *   memory (copy_*_user, get_user) while holding mlos_lock. Scheduling changes
 *   (sched_setattr_nocheck) take the cpuset and rq locks, and cpuset nests mmap_lock inside,
 *   so they run under the per-file prio_lock only, never under mlos_lock.
 *   The kref release functions of buffers and requests take no lock: they may run from
 *   vm_ops->close (mmap_lock held) or with mlos_lock held.
 */
#ifndef _MLOS_INTERNAL_H
#define _MLOS_INTERNAL_H

#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/wait.h>
#include <linux/xarray.h>

#include "../include/uapi/mlos_ml.h"

/* Module parameters (mlos_main.c). */
extern int debug_level;
extern bool enable_scheduler;
extern unsigned int pool_limit_mb;
extern unsigned int max_queue;
extern unsigned int max_priority_class;
extern unsigned int rt_priority;
extern unsigned int server_uid;

#define mlos_dbg(lvl, fmt, ...)						\
	do {								\
		if (READ_ONCE(debug_level) >= (lvl))			\
			pr_info(fmt, ##__VA_ARGS__);   	\
	} while (0)

/* Request states besides the MLOS_REQ_* final ones. */
#define MLOS_RS_QUEUED   16
#define MLOS_RS_INFLIGHT 17
#define mlos_req_final(state) ((state) <= MLOS_REQ_EXPIRED)

struct mlos_buf {
	struct kref kref;	/* memory: file references, vmas, requests */
	bool counted;		/* in the stats (published once) */
	unsigned int filerefs;	/* published (mappable by handle) while > 0; mlos_lock */
	u64 handle;
	u64 token;
	size_t size;		/* page-rounded */
	unsigned long npages;
	void *vaddr;		/* vmalloc_user(): zeroed, mappable */
};

struct mlos_fref {		/* one file's references to one buffer */
	struct mlos_buf *buf;
	unsigned long count;
};

struct mlos_req {
	struct kref kref;	/* submitter's list, queue/in-flight list, waiters */
	u64 id;
	u32 prio;
	int state;		/* MLOS_RS_* or a final MLOS_REQ_* */
	s32 status;
	u64 model_id, deadline_ns, user_data;
	struct mlos_buf *in, *out;	/* referenced by the request */
	struct pid *tgid;
	struct list_head qnode;	/* mlos.queue[prio] or the worker's in_flight */
	struct list_head snode;	/* the submitter's reqs */
	struct mlos_file *submitter, *worker;
	wait_queue_head_t wq;
};

struct mlos_file {
	struct xarray refs;		/* handle -> struct mlos_fref; mlos_lock */
	struct list_head reqs;		/* submitted, not yet reaped; mlos_lock */
	struct list_head in_flight;	/* taken, not completed; mlos_lock */
	bool may_take;			/* opener is server_uid or CAP_SYS_ADMIN */
	struct mutex prio_lock;
	struct list_head prio_saves;	/* struct mlos_prio_save; prio_lock */
	unsigned int nprio_saves;
};

struct mlos_dev {
	struct mutex lock;
	struct xarray bufs;		/* handle -> struct mlos_buf, published buffers */
	u64 next_handle, next_req;
	struct list_head queue[MLOS_PRIO_COUNT];
	unsigned int nqueued;		/* READ_ONCE() by waiting workers */
	unsigned int nlive;		/* requests not yet reaped */
	wait_queue_head_t take_wq;
	/* counters, under lock */
	u64 queued[MLOS_PRIO_COUNT];
	u64 in_flight, submitted, completed, cancelled, expired, peak_bytes;
	/* counters changed by kref releases, which take no lock */
	atomic64_t buffers, bytes, allocs, frees;
};

extern struct mlos_dev mlos;

/* Copying argument structs that start with a __u32 size word. */
int mlos_copy_in(void *karg, size_t ksize, size_t first_size, void __user *uarg, u32 *usize);
int mlos_copy_out(void __user *uarg, const void *karg, size_t ksize, u32 usize);

/* mlos_buf.c */
long mlos_ioctl_tensor_pin(struct mlos_file *f, void __user *uarg);
long mlos_ioctl_tensor_map(struct mlos_file *f, void __user *uarg);
long mlos_ioctl_tensor_unpin(struct mlos_file *f, void __user *uarg);
int mlos_mmap(struct file *file, struct vm_area_struct *vma);
struct mlos_buf *mlos_file_buf(struct mlos_file *f, u64 handle);
void mlos_buf_put(struct mlos_buf *buf);
void mlos_file_drop_bufs(struct mlos_file *f);

/* mlos_queue.c */
long mlos_ioctl_inference_start(struct mlos_file *f, void __user *uarg);
long mlos_ioctl_inference_wait(struct mlos_file *f, void __user *uarg);
long mlos_ioctl_req_take(struct mlos_file *f, void __user *uarg);
long mlos_ioctl_req_complete(struct mlos_file *f, void __user *uarg);
long mlos_ioctl_req_cancel(struct mlos_file *f, void __user *uarg);
void mlos_queue_sweep(void);
void mlos_file_drop_reqs(struct mlos_file *f);

/* mlos_prio.c */
long mlos_ioctl_set_priority(struct mlos_file *f, void __user *uarg);
long mlos_ioctl_reset_priority(struct mlos_file *f);
void mlos_file_restore_prio(struct mlos_file *f);

#endif /* _MLOS_INTERNAL_H */
