// SPDX-License-Identifier: GPL-2.0
/*
 * mlos_prio.c - SET_PRIORITY / RESET_PRIORITY for the calling thread.
 *
 *   NORMAL   -> SCHED_NORMAL, nice 0
 *   HIGH     -> SCHED_NORMAL, nice -5
 *   BATCH    -> SCHED_BATCH, nice 10          (SCHED_NORMAL nice 10 when !enable_scheduler)
 *   REALTIME -> SCHED_FIFO, rt_priority       (SCHED_NORMAL nice -10 when !enable_scheduler)
 * A caller without CAP_SYS_NICE may take classes down to max_priority_class (-EPERM above).
 * The module applies the class itself (sched_setattr_nocheck), so that bound is the policy.
 * The first SET_PRIORITY of a thread through a file saves the thread's policy and nice;
 * RESET_PRIORITY restores them, and so does release() for every thread still changed.
 * SCHED_DEADLINE threads are refused (-EBUSY): their parameters could not be restored.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/prio.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <uapi/linux/sched/types.h>

#include "mlos_internal.h"

#define MLOS_MAX_PRIO_SAVES 4096	/* threads one file remembers */

struct mlos_prio_save {
	struct list_head node;
	struct pid *pid;		/* the thread */
	int policy;
	int nice;
	unsigned int rt_prio;
};

static int mlos_sched_apply(struct task_struct *t, int policy, int nice, unsigned int rt_prio)
{
	struct sched_attr attr = { .size = sizeof(attr), .sched_policy = policy };

	if (policy == SCHED_FIFO || policy == SCHED_RR)
		attr.sched_priority = rt_prio;
	else
		attr.sched_nice = nice;
	return sched_setattr_nocheck(t, &attr);
}

static struct mlos_prio_save *mlos_prio_find(struct mlos_file *f, struct pid *pid)
{
	struct mlos_prio_save *s;

	lockdep_assert_held(&f->prio_lock);
	list_for_each_entry(s, &f->prio_saves, node)
		if (s->pid == pid)
			return s;
	return NULL;
}

static void mlos_prio_forget(struct mlos_file *f, struct mlos_prio_save *s)
{
	list_del(&s->node);
	f->nprio_saves--;
	put_pid(s->pid);
	kfree(s);
}

long mlos_ioctl_set_priority(struct mlos_file *f, void __user *uarg)
{
	struct mlos_prio_save *save, *fresh = NULL;
	struct mlos_priority arg;
	int policy, nice;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.priority >= MLOS_PRIO_COUNT)
		return -EINVAL;
	if (arg.priority < READ_ONCE(max_priority_class) && !capable(CAP_SYS_NICE))
		return -EPERM;
	if (current->policy == SCHED_DEADLINE)
		return -EBUSY;

	switch (arg.priority) {
	case MLOS_PRIO_REALTIME:
		policy = READ_ONCE(enable_scheduler) ? SCHED_FIFO : SCHED_NORMAL;
		nice = -10;
		break;
	case MLOS_PRIO_HIGH:
		policy = SCHED_NORMAL;
		nice = -5;
		break;
	case MLOS_PRIO_BATCH:
		policy = READ_ONCE(enable_scheduler) ? SCHED_BATCH : SCHED_NORMAL;
		nice = 10;
		break;
	default:
		policy = SCHED_NORMAL;
		nice = 0;
		break;
	}

	mutex_lock(&f->prio_lock);
	save = mlos_prio_find(f, task_pid(current));
	if (!save) {
		if (f->nprio_saves >= MLOS_MAX_PRIO_SAVES) {
			ret = -EBUSY;
			goto out_unlock;
		}
		fresh = kzalloc(sizeof(*fresh), GFP_KERNEL);
		if (!fresh) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		fresh->pid = get_pid(task_pid(current));
		fresh->policy = current->policy;
		fresh->nice = task_nice(current);
		fresh->rt_prio = current->rt_priority;
		list_add(&fresh->node, &f->prio_saves);
		f->nprio_saves++;
	}
	ret = mlos_sched_apply(current, policy, nice,
			       clamp_t(unsigned int, READ_ONCE(rt_priority), 1, MAX_RT_PRIO - 1));
	if (ret && fresh)
		mlos_prio_forget(f, fresh);
out_unlock:
	mutex_unlock(&f->prio_lock);
	if (ret)
		return ret;
	arg.nice = task_nice(current);
	arg.policy = current->policy;
	mlos_dbg(2, "thread %d: class %u -> policy %u nice %d\n", task_pid_nr(current),
		 arg.priority, arg.policy, arg.nice);
	return mlos_copy_out(uarg, &arg, sizeof(arg), usize);
}

long mlos_ioctl_reset_priority(struct mlos_file *f)
{
	struct mlos_prio_save *save;
	int ret = 0;

	mutex_lock(&f->prio_lock);
	save = mlos_prio_find(f, task_pid(current));
	if (save) {
		ret = mlos_sched_apply(current, save->policy, save->nice, save->rt_prio);
		mlos_prio_forget(f, save);
	}
	mutex_unlock(&f->prio_lock);
	return ret;
}

void mlos_file_restore_prio(struct mlos_file *f)
{
	struct mlos_prio_save *save, *tmp;
	struct task_struct *t;

	mutex_lock(&f->prio_lock);
	list_for_each_entry_safe(save, tmp, &f->prio_saves, node) {
		t = get_pid_task(save->pid, PIDTYPE_PID);
		if (t) {
			mlos_sched_apply(t, save->policy, save->nice, save->rt_prio);
			put_task_struct(t);
		}
		mlos_prio_forget(f, save);
	}
	mutex_unlock(&f->prio_lock);
}
