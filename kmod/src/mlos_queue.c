// SPDX-License-Identifier: GPL-2.0
/*
 * mlos_queue.c - the request queue: INFERENCE_START / _WAIT, REQ_TAKE / _COMPLETE / _CANCEL.
 *
 * A request is QUEUED on mlos.queue[prio] (FIFO), then INFLIGHT on the taking worker's
 * in_flight list, then final: DONE (the worker's status), CANCELLED or EXPIRED. It stays on
 * its submitter's reqs list until INFERENCE_WAIT reports the final state and frees it.
 *  - Deadlines: a queued request past its deadline is EXPIRED (and its waiter woken) by
 *    whichever comes first: a worker's REQ_TAKE, the submitter's WAIT (which sleeps no longer
 *    than the deadline), INFERENCE_START or STATS. Expired requests are never handed out.
 *  - REQ_CANCEL (submitter only): a QUEUED request becomes CANCELLED; an INFLIGHT one is
 *    refused with -EBUSY (the worker owns it now); a final one is left as it is (0).
 *    WAIT is still needed to collect and free a cancelled request.
 *  - Release of a submitter: its queued requests are cancelled and all of them dropped;
 *    in-flight ones stay with their worker, whose COMPLETE still succeeds (nobody waits).
 *  - Release of a worker: its in-flight requests are failed: DONE with status -ECONNABORTED,
 *    submitters woken (not requeued: a request that kills its worker would kill them all).
 * Bounds: max_queue requests QUEUED, 4 * max_queue requests alive in all (-EBUSY).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/slab.h>

#include "mlos_internal.h"

static atomic_t mlos_nlive = ATOMIC_INIT(0);	/* requests allocated, not yet freed */

static void mlos_req_release(struct kref *kref)
{
	struct mlos_req *req = container_of(kref, struct mlos_req, kref);

	mlos_buf_put(req->in);
	mlos_buf_put(req->out);
	put_pid(req->tgid);
	kfree(req);
	atomic_dec(&mlos_nlive);
}

static void mlos_req_put(struct mlos_req *req)
{
	kref_put(&req->kref, mlos_req_release);
}

/* Helpers below: caller holds mlos.lock. */

static void mlos_dequeue(struct mlos_req *req)
{
	list_del_init(&req->qnode);
	WRITE_ONCE(mlos.nqueued, mlos.nqueued - 1);
	mlos.queued[req->prio]--;
}

static void mlos_finish(struct mlos_req *req, int state, s32 status)
{
	req->status = status;
	WRITE_ONCE(req->state, state);
	wake_up_all(&req->wq);
}

/* A queued request leaves the queue with a final state; the queue's reference goes. */
static void mlos_unqueue_final(struct mlos_req *req, int state)
{
	mlos_dequeue(req);
	if (state == MLOS_REQ_EXPIRED)
		mlos.expired++;
	else
		mlos.cancelled++;
	mlos_finish(req, state, 0);
	mlos_req_put(req);
}

static bool mlos_past(const struct mlos_req *req, u64 now)
{
	return req->deadline_ns && req->deadline_ns <= now;
}

void mlos_queue_sweep(void)
{
	struct mlos_req *req, *tmp;
	u64 now = ktime_get_ns();
	int p;

	lockdep_assert_held(&mlos.lock);
	for (p = 0; p < MLOS_PRIO_COUNT; p++)
		list_for_each_entry_safe(req, tmp, &mlos.queue[p], qnode)
			if (mlos_past(req, now))
				mlos_unqueue_final(req, MLOS_REQ_EXPIRED);
}

static struct mlos_req *mlos_find(struct list_head *head, u64 id, bool submitted)
{
	struct mlos_req *req;

	if (submitted) {
		list_for_each_entry(req, head, snode)
			if (req->id == id)
				return req;
	} else {
		list_for_each_entry(req, head, qnode)
			if (req->id == id)
				return req;
	}
	return NULL;
}

/* End of a wait of @timeout_ns from now, 0 for none (also when it would overflow). */
static u64 mlos_wait_end(u64 timeout_ns)
{
	u64 now = ktime_get_ns();

	if (!timeout_ns || timeout_ns > U64_MAX - now)
		return 0;
	return now + timeout_ns;
}

/* Jiffies to sleep until @end_ns (0: forever); 0 when it has passed. */
static long mlos_jiffies_until(u64 end_ns)
{
	u64 now = ktime_get_ns();

	if (!end_ns)
		return MAX_SCHEDULE_TIMEOUT;
	if (now >= end_ns)
		return 0;
	return min_t(u64, nsecs_to_jiffies(end_ns - now) + 1, MAX_SCHEDULE_TIMEOUT - 1);
}

long mlos_ioctl_inference_start(struct mlos_file *f, void __user *uarg)
{
	struct mlos_inference_start arg;
	struct mlos_buf *in, *out;
	struct mlos_req *req;
	unsigned int limit;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.priority >= MLOS_PRIO_COUNT)
		return -EINVAL;

	req = kzalloc(sizeof(*req), GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	kref_init(&req->kref);		/* the submitter's list */
	init_waitqueue_head(&req->wq);
	INIT_LIST_HEAD(&req->qnode);
	INIT_LIST_HEAD(&req->snode);

	mutex_lock(&mlos.lock);
	in = mlos_file_buf(f, arg.input_handle);
	out = mlos_file_buf(f, arg.output_handle);
	if (!in || !out) {
		ret = -ENOENT;
		goto err_unlock;
	}
	mlos_queue_sweep();
	limit = READ_ONCE(max_queue);
	if (mlos.nqueued >= limit || atomic_read(&mlos_nlive) >= 4ULL * limit) {
		ret = -EBUSY;
		goto err_unlock;
	}
	atomic_inc(&mlos_nlive);
	kref_get(&in->kref);
	kref_get(&out->kref);
	req->in = in;
	req->out = out;
	req->tgid = get_pid(task_tgid(current));
	req->id = mlos.next_req++;
	req->prio = arg.priority;
	req->model_id = arg.model_id;
	req->deadline_ns = arg.deadline_ns;
	req->user_data = arg.user_data;
	req->state = MLOS_RS_QUEUED;
	req->submitter = f;
	kref_get(&req->kref);		/* the queue */
	list_add_tail(&req->qnode, &mlos.queue[req->prio]);
	list_add_tail(&req->snode, &f->reqs);
	WRITE_ONCE(mlos.nqueued, mlos.nqueued + 1);
	mlos.queued[req->prio]++;
	mlos.submitted++;
	arg.request_id = req->id;
	mutex_unlock(&mlos.lock);

	wake_up_all(&mlos.take_wq);
	mlos_dbg(1, "request %llu queued, priority %u\n", arg.request_id, arg.priority);
	/* on -EFAULT the request stays queued; release() cancels it */
	return mlos_copy_out(uarg, &arg, sizeof(arg), usize);

err_unlock:
	mutex_unlock(&mlos.lock);
	kfree(req);
	return ret;
}

long mlos_ioctl_inference_wait(struct mlos_file *f, void __user *uarg)
{
	struct mlos_inference_wait arg;
	struct mlos_req *req;
	u64 end, sleep_end;
	long left;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.__pad)
		return -EINVAL;
	end = mlos_wait_end(arg.timeout_ns);

	for (;;) {
		mutex_lock(&mlos.lock);
		req = mlos_find(&f->reqs, arg.request_id, true);
		if (!req) {
			mutex_unlock(&mlos.lock);
			return -ENOENT;
		}
		if (req->state == MLOS_RS_QUEUED && mlos_past(req, ktime_get_ns()))
			mlos_unqueue_final(req, MLOS_REQ_EXPIRED);
		if (mlos_req_final(req->state)) {
			arg.state = req->state;
			arg.status = req->status;
			list_del_init(&req->snode);
			req->submitter = NULL;
			mlos_req_put(req);
			mutex_unlock(&mlos.lock);
			return mlos_copy_out(uarg, &arg, sizeof(arg), usize);
		}
		sleep_end = end;
		if (req->state == MLOS_RS_QUEUED && req->deadline_ns &&
		    (!end || req->deadline_ns < end))
			sleep_end = req->deadline_ns;
		kref_get(&req->kref);
		mutex_unlock(&mlos.lock);

		if (end && !mlos_jiffies_until(end)) {
			mlos_req_put(req);
			return -ETIMEDOUT;
		}
		left = wait_event_interruptible_timeout(req->wq,
				mlos_req_final(READ_ONCE(req->state)),
				mlos_jiffies_until(sleep_end));
		mlos_req_put(req);
		if (left < 0)
			return end ? -EINTR : -ERESTARTSYS;
	}
}

/* Hand out the first live request of the highest non-empty priority, or NULL. */
static struct mlos_req *mlos_take_one(struct mlos_file *f)
{
	struct mlos_req *req, *tmp;
	u64 now = ktime_get_ns();
	int p;

	for (p = 0; p < MLOS_PRIO_COUNT; p++) {
		list_for_each_entry_safe(req, tmp, &mlos.queue[p], qnode) {
			if (mlos_past(req, now)) {
				mlos_unqueue_final(req, MLOS_REQ_EXPIRED);
				continue;
			}
			mlos_dequeue(req);	/* the queue's reference moves to in_flight */
			req->state = MLOS_RS_INFLIGHT;
			req->worker = f;
			list_add_tail(&req->qnode, &f->in_flight);
			mlos.in_flight++;
			return req;
		}
	}
	return NULL;
}

/* REQ_TAKE could not tell the worker: put the request back at the head of its queue. */
static void mlos_untake(struct mlos_file *f, struct mlos_req *req)
{
	mutex_lock(&mlos.lock);
	if (req->state == MLOS_RS_INFLIGHT && req->worker == f) {
		list_move(&req->qnode, &mlos.queue[req->prio]);
		req->state = MLOS_RS_QUEUED;
		req->worker = NULL;
		mlos.in_flight--;
		WRITE_ONCE(mlos.nqueued, mlos.nqueued + 1);
		mlos.queued[req->prio]++;
	}
	mutex_unlock(&mlos.lock);
	wake_up_all(&mlos.take_wq);
}

long mlos_ioctl_req_take(struct mlos_file *f, void __user *uarg)
{
	struct mlos_req_take arg;
	struct mlos_req *req;
	long left;
	u32 usize;
	u64 end;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.__pad)
		return -EINVAL;
	if (!f->may_take)
		return -EPERM;
	end = mlos_wait_end(arg.timeout_ns);

	for (;;) {
		mutex_lock(&mlos.lock);
		req = mlos_take_one(f);
		if (req)
			break;
		mutex_unlock(&mlos.lock);
		if (end && !mlos_jiffies_until(end))
			return -ETIMEDOUT;
		left = wait_event_interruptible_timeout(mlos.take_wq, READ_ONCE(mlos.nqueued),
							mlos_jiffies_until(end));
		if (left < 0)
			return end ? -EINTR : -ERESTARTSYS;
	}
	arg.request_id = req->id;
	arg.model_id = req->model_id;
	arg.input_handle = req->in->handle;
	arg.input_token = req->in->token;
	arg.output_handle = req->out->handle;
	arg.output_token = req->out->token;
	arg.deadline_ns = req->deadline_ns;
	arg.user_data = req->user_data;
	arg.priority = req->prio;
	arg.submitter_pid = pid_vnr(req->tgid);
	kref_get(&req->kref);		/* for mlos_untake() */
	mutex_unlock(&mlos.lock);

	mlos_dbg(1, "request %llu taken\n", arg.request_id);
	ret = mlos_copy_out(uarg, &arg, sizeof(arg), usize);
	if (ret)
		mlos_untake(f, req);
	mlos_req_put(req);
	return ret;
}

long mlos_ioctl_req_complete(struct mlos_file *f, void __user *uarg)
{
	struct mlos_req_complete arg;
	struct mlos_req *req;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.status > 0 || arg.status < -MAX_ERRNO)
		return -EINVAL;

	mutex_lock(&mlos.lock);
	req = mlos_find(&f->in_flight, arg.request_id, false);
	if (!req) {
		ret = -ENOENT;
		goto out_unlock;
	}
	list_del_init(&req->qnode);
	req->worker = NULL;
	mlos.in_flight--;
	mlos.completed++;
	mlos_finish(req, MLOS_REQ_DONE, arg.status);
	mlos_req_put(req);		/* in_flight's reference */
out_unlock:
	mutex_unlock(&mlos.lock);
	mlos_dbg(1, "request %llu complete (%d): %d\n", arg.request_id, arg.status, ret);
	return ret;
}

long mlos_ioctl_req_cancel(struct mlos_file *f, void __user *uarg)
{
	struct mlos_req_cancel arg;
	struct mlos_req *req;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.__pad)
		return -EINVAL;

	mutex_lock(&mlos.lock);
	req = mlos_find(&f->reqs, arg.request_id, true);
	if (!req)
		ret = -ENOENT;
	else if (req->state == MLOS_RS_INFLIGHT)
		ret = -EBUSY;
	else if (req->state == MLOS_RS_QUEUED)
		mlos_unqueue_final(req, MLOS_REQ_CANCELLED);
	mutex_unlock(&mlos.lock);
	return ret;
}

/* release(): fail what this file took, cancel and drop what it submitted. */
void mlos_file_drop_reqs(struct mlos_file *f)
{
	struct mlos_req *req, *tmp;

	mutex_lock(&mlos.lock);
	list_for_each_entry_safe(req, tmp, &f->in_flight, qnode) {
		list_del_init(&req->qnode);
		req->worker = NULL;
		mlos.in_flight--;
		mlos_finish(req, MLOS_REQ_DONE, -ECONNABORTED);
		mlos_req_put(req);
	}
	list_for_each_entry_safe(req, tmp, &f->reqs, snode) {
		if (req->state == MLOS_RS_QUEUED)
			mlos_unqueue_final(req, MLOS_REQ_CANCELLED);
		list_del_init(&req->snode);
		req->submitter = NULL;
		mlos_req_put(req);
	}
	mutex_unlock(&mlos.lock);
}
