// SPDX-License-Identifier: GPL-2.0
/*
 * mlos_main.c - /dev/mlos-ml: module parameters, the ioctl switch, per-open state, stats.
 *
 * The ABI is kmod/include/uapi/mlos_ml.h. Every argument struct starts with a __u32 size:
 * sizes from the first published one up to ours are accepted (the rest zero-filled); larger
 * ones only when the bytes we do not know are zero (-E2BIG otherwise, as copy_struct_from_user
 * and sched_setattr do). The ioctl switch ignores the size bits of the command number, so a
 * caller built against an older or newer header (whose _IOWR() carries another sizeof)
 * reaches the same handler; the size word decides.
 *
 * Stats are also in sysfs: /sys/class/misc/mlos-ml/stats/<counter>, one value a file
 * ("queued" holds the four per-priority numbers).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/device.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "mlos_internal.h"

int debug_level;
module_param(debug_level, int, 0644);
MODULE_PARM_DESC(debug_level, "Log operations to the kernel log: 0 none, 1 allocations and requests, 2 everything");

bool enable_scheduler = true;
module_param(enable_scheduler, bool, 0644);
MODULE_PARM_DESC(enable_scheduler, "Let SET_PRIORITY change the scheduling policy (SCHED_FIFO for REALTIME, SCHED_BATCH for BATCH); when off only nice values change");

unsigned int pool_limit_mb = 256;
module_param(pool_limit_mb, uint, 0644);
MODULE_PARM_DESC(pool_limit_mb, "Total MiB all buffers may hold; TENSOR_PIN past it fails with ENOSPC");

unsigned int max_queue = 256;
module_param(max_queue, uint, 0644);
MODULE_PARM_DESC(max_queue, "Requests waiting in the queue at most; INFERENCE_START past it fails with EBUSY (and at most 4x as many unreaped requests)");

unsigned int max_priority_class = MLOS_PRIO_HIGH;
module_param(max_priority_class, uint, 0644);
MODULE_PARM_DESC(max_priority_class, "Highest priority class (0 REALTIME .. 3 BATCH) a caller without CAP_SYS_NICE may take; higher ones fail with EPERM");

unsigned int rt_priority = 10;
module_param(rt_priority, uint, 0644);
MODULE_PARM_DESC(rt_priority, "SCHED_FIFO priority (1-99) a REALTIME thread gets");

unsigned int server_uid;
module_param(server_uid, uint, 0644);
MODULE_PARM_DESC(server_uid, "Only files opened by this uid (or with CAP_SYS_ADMIN) may REQ_TAKE: it hands out buffer tokens");

static ushort dev_mode = 0666;
module_param(dev_mode, ushort, 0444);
MODULE_PARM_DESC(dev_mode, "Permission bits of /dev/mlos-ml");

struct mlos_dev mlos;

/* The first published size of each argument struct (all of ABI version 1). */
#define MLOS_FIRST_SIZE(type) sizeof(struct type)

int mlos_copy_in(void *karg, size_t ksize, size_t first_size, void __user *uarg, u32 *usize)
{
	u32 size;
	int ret;

	if (get_user(size, (u32 __user *)uarg))
		return -EFAULT;
	if (size < first_size || size > PAGE_SIZE)
		return -EINVAL;
	ret = copy_struct_from_user(karg, ksize, uarg, size);
	if (ret)
		return ret;
	*usize = size;
	return 0;
}

int mlos_copy_out(void __user *uarg, const void *karg, size_t ksize, u32 usize)
{
	if (copy_to_user(uarg, karg, min_t(size_t, ksize, usize)))
		return -EFAULT;
	return 0;
}

static u64 mlos_pool_limit(void)
{
	return (u64)READ_ONCE(pool_limit_mb) << 20;
}

static long mlos_ioctl_version(void __user *uarg)
{
	struct mlos_version v;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&v, sizeof(v), MLOS_FIRST_SIZE(mlos_version), uarg, &usize);
	if (ret)
		return ret;
	v.abi_version = MLOS_ML_ABI_VERSION;
	v.pool_limit = mlos_pool_limit();
	v.max_queue = READ_ONCE(max_queue);
	v.max_priority = READ_ONCE(max_priority_class);
	return mlos_copy_out(uarg, &v, sizeof(v), usize);
}

static void mlos_stats_fill(struct mlos_stats *s)
{
	int p;

	mutex_lock(&mlos.lock);
	mlos_queue_sweep();
	for (p = 0; p < MLOS_PRIO_COUNT; p++)
		s->queued[p] = mlos.queued[p];
	s->in_flight = mlos.in_flight;
	s->submitted = mlos.submitted;
	s->completed = mlos.completed;
	s->cancelled = mlos.cancelled;
	s->expired = mlos.expired;
	s->peak_bytes = mlos.peak_bytes;
	mutex_unlock(&mlos.lock);
	s->buffers = atomic64_read(&mlos.buffers);
	s->bytes = atomic64_read(&mlos.bytes);
	s->allocs = atomic64_read(&mlos.allocs);
	s->frees = atomic64_read(&mlos.frees);
}

static long mlos_ioctl_stats(void __user *uarg)
{
	struct mlos_stats s;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&s, sizeof(s), MLOS_FIRST_SIZE(mlos_stats), uarg, &usize);
	if (ret)
		return ret;
	if (s.__pad)
		return -EINVAL;
	mlos_stats_fill(&s);
	return mlos_copy_out(uarg, &s, sizeof(s), usize);
}

#define MLOS_IOC_KEY(cmd) ((cmd) & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT))

static long mlos_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct mlos_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (MLOS_IOC_KEY(cmd)) {
	case MLOS_IOC_KEY(MLOS_VERSION):
		return mlos_ioctl_version(uarg);
	case MLOS_IOC_KEY(MLOS_TENSOR_PIN):
		return mlos_ioctl_tensor_pin(f, uarg);
	case MLOS_IOC_KEY(MLOS_TENSOR_MAP):
		return mlos_ioctl_tensor_map(f, uarg);
	case MLOS_IOC_KEY(MLOS_TENSOR_UNPIN):
		return mlos_ioctl_tensor_unpin(f, uarg);
	case MLOS_IOC_KEY(MLOS_SET_PRIORITY):
		return mlos_ioctl_set_priority(f, uarg);
	case MLOS_IOC_KEY(MLOS_RESET_PRIORITY):
		return mlos_ioctl_reset_priority(f);
	case MLOS_IOC_KEY(MLOS_INFERENCE_START):
		return mlos_ioctl_inference_start(f, uarg);
	case MLOS_IOC_KEY(MLOS_INFERENCE_WAIT):
		return mlos_ioctl_inference_wait(f, uarg);
	case MLOS_IOC_KEY(MLOS_REQ_TAKE):
		return mlos_ioctl_req_take(f, uarg);
	case MLOS_IOC_KEY(MLOS_REQ_COMPLETE):
		return mlos_ioctl_req_complete(f, uarg);
	case MLOS_IOC_KEY(MLOS_REQ_CANCEL):
		return mlos_ioctl_req_cancel(f, uarg);
	case MLOS_IOC_KEY(MLOS_STATS):
		return mlos_ioctl_stats(uarg);
	default:
		return -ENOTTY;
	}
}

static int mlos_open(struct inode *inode, struct file *file)
{
	struct mlos_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	xa_init(&f->refs);
	INIT_LIST_HEAD(&f->reqs);
	INIT_LIST_HEAD(&f->in_flight);
	mutex_init(&f->prio_lock);
	INIT_LIST_HEAD(&f->prio_saves);
	f->may_take = uid_eq(current_euid(), make_kuid(&init_user_ns, READ_ONCE(server_uid))) ||
		      capable(CAP_SYS_ADMIN);
	file->private_data = f;
	return stream_open(inode, file);
}

/* Runs when the last reference to the file goes: no ioctl or mmap() is in progress. */
static int mlos_release(struct inode *inode, struct file *file)
{
	struct mlos_file *f = file->private_data;

	mlos_file_drop_reqs(f);
	mlos_file_drop_bufs(f);
	mlos_file_restore_prio(f);
	xa_destroy(&f->refs);
	mutex_destroy(&f->prio_lock);
	kfree(f);
	return 0;
}

static const struct file_operations mlos_fops = {
	.owner = THIS_MODULE,
	.open = mlos_open,
	.release = mlos_release,
	.unlocked_ioctl = mlos_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = mlos_mmap,
	.llseek = no_llseek,
};

/* sysfs: one counter a file under /sys/class/misc/mlos-ml/stats/ */
#define MLOS_STAT_ATTR(field)							\
static ssize_t field##_show(struct device *dev, struct device_attribute *attr,	\
			    char *buf)						\
{										\
	struct mlos_stats s;							\
										\
	mlos_stats_fill(&s);							\
	return sysfs_emit(buf, "%llu\n", (unsigned long long)s.field);		\
}										\
static DEVICE_ATTR_RO(field)

MLOS_STAT_ATTR(buffers);
MLOS_STAT_ATTR(bytes);
MLOS_STAT_ATTR(peak_bytes);
MLOS_STAT_ATTR(in_flight);
MLOS_STAT_ATTR(submitted);
MLOS_STAT_ATTR(completed);
MLOS_STAT_ATTR(cancelled);
MLOS_STAT_ATTR(expired);
MLOS_STAT_ATTR(allocs);
MLOS_STAT_ATTR(frees);

static ssize_t queued_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mlos_stats s;

	mlos_stats_fill(&s);
	return sysfs_emit(buf, "%llu %llu %llu %llu\n", s.queued[0], s.queued[1], s.queued[2],
			  s.queued[3]);
}
static DEVICE_ATTR_RO(queued);

static struct attribute *mlos_stats_attrs[] = {
	&dev_attr_buffers.attr, &dev_attr_bytes.attr, &dev_attr_peak_bytes.attr,
	&dev_attr_queued.attr, &dev_attr_in_flight.attr, &dev_attr_submitted.attr,
	&dev_attr_completed.attr, &dev_attr_cancelled.attr, &dev_attr_expired.attr,
	&dev_attr_allocs.attr, &dev_attr_frees.attr, NULL,
};

static const struct attribute_group mlos_stats_group = {
	.name = "stats",
	.attrs = mlos_stats_attrs,
};

static const struct attribute_group *mlos_groups[] = { &mlos_stats_group, NULL };

static struct miscdevice mlos_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mlos-ml",
	.fops = &mlos_fops,
	.groups = mlos_groups,
};

static int __init mlos_init(void)
{
	int p, ret;

	/* the ABI's sizes, as published: a change here breaks every caller */
	BUILD_BUG_ON(sizeof(struct mlos_version) != 24);
	BUILD_BUG_ON(sizeof(struct mlos_tensor_pin) != 40);
	BUILD_BUG_ON(sizeof(struct mlos_tensor_map) != 40);
	BUILD_BUG_ON(sizeof(struct mlos_tensor_unpin) != 16);
	BUILD_BUG_ON(sizeof(struct mlos_priority) != 16);
	BUILD_BUG_ON(sizeof(struct mlos_inference_start) != 56);
	BUILD_BUG_ON(sizeof(struct mlos_inference_wait) != 32);
	BUILD_BUG_ON(sizeof(struct mlos_req_take) != 88);
	BUILD_BUG_ON(sizeof(struct mlos_req_complete) != 16);
	BUILD_BUG_ON(sizeof(struct mlos_req_cancel) != 16);
	BUILD_BUG_ON(sizeof(struct mlos_stats) != 120);

	mutex_init(&mlos.lock);
	xa_init(&mlos.bufs);
	mlos.next_handle = 1;
	mlos.next_req = 1;
	for (p = 0; p < MLOS_PRIO_COUNT; p++)
		INIT_LIST_HEAD(&mlos.queue[p]);
	init_waitqueue_head(&mlos.take_wq);
	mlos_misc.mode = dev_mode & 0777;
	ret = misc_register(&mlos_misc);
	if (ret)
		return ret;
	pr_info("ABI %d, /dev/%s, pool %u MiB, queue %u\n", MLOS_ML_ABI_VERSION, mlos_misc.name,
		pool_limit_mb, max_queue);
	return 0;
}

static void __exit mlos_exit(void)
{
	misc_deregister(&mlos_misc);
	WARN_ON(!xa_empty(&mlos.bufs));
	xa_destroy(&mlos.bufs);
	mutex_destroy(&mlos.lock);
}

module_init(mlos_init);
module_exit(mlos_exit);
MODULE_DESCRIPTION("MLOS inference helper: shared tensor buffers, priorities, request queue");
MODULE_AUTHOR("MLOS-py");
MODULE_LICENSE("GPL");
