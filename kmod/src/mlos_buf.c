// SPDX-License-Identifier: GPL-2.0
/*
 * mlos_buf.c - tensor buffers: TENSOR_PIN, TENSOR_MAP, TENSOR_UNPIN and mmap().
 *
 * A buffer is vmalloc_user() memory (zeroed), with a handle (monotonic, never reused while
 * the module is loaded) and a random 64-bit token. Two counts keep it:
 *  - filerefs: references held by open files (PIN gives one, each MAP one more, UNPIN drops
 *    one, release drops all of a file's). While filerefs > 0 the buffer is published in
 *    mlos.bufs and can be mapped by handle + token; at 0 it is unpublished (-ENOENT).
 *  - kref: the memory. Held by every file reference, every vma, every request naming it.
 *    The memory goes (and the stats drop) with the last of them.
 * A file maps a buffer it references with mmap(offset = handle << PAGE_SHIFT, MAP_SHARED),
 * length up to the page-rounded size; pages are inserted on fault, SIGBUS past the end.
 * The vma is moved to an anonymous file of its own (as dma-buf does), so a mapping does not
 * keep the device file open: closing the fd releases the file's references and requests
 * even while the process still has buffers mapped; the pages stay for the mapping.
 *
 * Accounting: stats (buffers, bytes, allocs, frees, peak) follow the published life, as the
 * ABI describes it; the pool limit counts the memory itself (mlos_mem_bytes), mappings of
 * unpublished buffers included, so unpinning a mapped buffer cannot get round the limit.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "mlos_internal.h"

/* mmap offsets are handle << PAGE_SHIFT: keep them inside a signed 64-bit off_t */
#define MLOS_MAX_HANDLE ((U64_MAX >> 1) >> PAGE_SHIFT)

static atomic64_t mlos_mem_bytes = ATOMIC64_INIT(0);	/* memory of all buffers */

static void mlos_buf_release(struct kref *kref)
{
	struct mlos_buf *buf = container_of(kref, struct mlos_buf, kref);

	if (buf->counted) {
		mlos_dbg(1, "free buffer %llu memory (%zu bytes)\n", buf->handle, buf->size);
		atomic64_sub(buf->size, &mlos_mem_bytes);
	}
	vfree(buf->vaddr);
	kfree(buf);
}

void mlos_buf_put(struct mlos_buf *buf)
{
	kref_put(&buf->kref, mlos_buf_release);
}

/* The buffer @f references under @handle, or NULL. Caller holds mlos.lock. */
struct mlos_buf *mlos_file_buf(struct mlos_file *f, u64 handle)
{
	struct mlos_fref *ref;

	lockdep_assert_held(&mlos.lock);
	if (handle > ULONG_MAX)
		return NULL;
	ref = xa_load(&f->refs, handle);
	return ref ? ref->buf : NULL;
}

/* Give @f one more reference to @buf. Caller holds mlos.lock. */
static int mlos_file_ref(struct mlos_file *f, struct mlos_buf *buf)
{
	struct mlos_fref *ref;
	int ret;

	lockdep_assert_held(&mlos.lock);
	ref = xa_load(&f->refs, buf->handle);
	if (!ref) {
		ref = kzalloc(sizeof(*ref), GFP_KERNEL);
		if (!ref)
			return -ENOMEM;
		ref->buf = buf;
		ret = xa_insert(&f->refs, buf->handle, ref, GFP_KERNEL);
		if (ret) {
			kfree(ref);
			return ret;
		}
	}
	ref->count++;
	buf->filerefs++;
	kref_get(&buf->kref);
	return 0;
}

/* Drop @n of @f's references to the buffer under @handle. Caller holds mlos.lock. */
static int mlos_file_unref(struct mlos_file *f, u64 handle, unsigned long n)
{
	struct mlos_fref *ref;
	struct mlos_buf *buf;

	lockdep_assert_held(&mlos.lock);
	ref = handle <= ULONG_MAX ? xa_load(&f->refs, handle) : NULL;
	if (!ref)
		return -ENOENT;
	buf = ref->buf;
	n = min(n, ref->count);
	ref->count -= n;
	if (!ref->count) {
		xa_erase(&f->refs, handle);
		kfree(ref);
	}
	buf->filerefs -= n;
	if (!buf->filerefs) {		/* unpublished: gone as far as the ABI is concerned */
		xa_erase(&mlos.bufs, buf->handle);
		atomic64_dec(&mlos.buffers);
		atomic64_sub(buf->size, &mlos.bytes);
		atomic64_inc(&mlos.frees);
	}
	while (n--)
		mlos_buf_put(buf);
	return 0;
}

long mlos_ioctl_tensor_pin(struct mlos_file *f, void __user *uarg)
{
	struct mlos_tensor_pin arg;
	struct mlos_buf *buf;
	u64 limit, bytes;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags || !arg.length)
		return -EINVAL;
	limit = (u64)READ_ONCE(pool_limit_mb) << 20;
	if (arg.length > limit)
		return -ENOSPC;
	/* length <= limit < 2^52: the page rounding cannot overflow */

	buf = kzalloc(sizeof(*buf), GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	kref_init(&buf->kref);
	buf->size = PAGE_ALIGN(arg.length);
	buf->npages = buf->size >> PAGE_SHIFT;
	buf->token = get_random_u64() ?: 1;
	buf->vaddr = vmalloc_user(buf->size);
	if (!buf->vaddr) {
		kfree(buf);
		return -ENOMEM;
	}
	mutex_lock(&mlos.lock);
	/* memory only grows under mlos.lock, so this check cannot be raced past */
	if (atomic64_read(&mlos_mem_bytes) + buf->size > limit) {
		ret = -ENOSPC;
		goto err_unlock;
	}
	if (mlos.next_handle > MLOS_MAX_HANDLE) {
		ret = -EOVERFLOW;
		goto err_unlock;
	}
	buf->handle = mlos.next_handle;
	ret = xa_insert(&mlos.bufs, buf->handle, buf, GFP_KERNEL);
	if (ret)
		goto err_unlock;
	ret = mlos_file_ref(f, buf);	/* takes the file's kref */
	if (ret) {
		xa_erase(&mlos.bufs, buf->handle);
		goto err_unlock;
	}
	mlos.next_handle++;
	buf->counted = true;
	atomic64_add(buf->size, &mlos_mem_bytes);
	atomic64_inc(&mlos.buffers);
	atomic64_inc(&mlos.allocs);
	bytes = atomic64_add_return(buf->size, &mlos.bytes);
	mlos.peak_bytes = max(mlos.peak_bytes, bytes);
	arg.handle = buf->handle;	/* copied now: another thread may unpin it at once */
	arg.token = buf->token;
	arg.mmap_offset = buf->handle << PAGE_SHIFT;
	mlos_dbg(1, "pin buffer %llu (%zu bytes)\n", arg.handle, buf->size);
	mlos_buf_put(buf);		/* the initial kref: the file's reference holds it now */
	mutex_unlock(&mlos.lock);

	ret = mlos_copy_out(uarg, &arg, sizeof(arg), usize);
	if (ret) {		/* the caller never learnt the handle: undo */
		mutex_lock(&mlos.lock);
		mlos_file_unref(f, arg.handle, 1);
		mutex_unlock(&mlos.lock);
	}
	return ret;

err_unlock:
	mutex_unlock(&mlos.lock);
	mlos_buf_put(buf);
	return ret;
}

long mlos_ioctl_tensor_map(struct mlos_file *f, void __user *uarg)
{
	struct mlos_tensor_map arg;
	struct mlos_buf *buf;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.__pad)
		return -EINVAL;

	mutex_lock(&mlos.lock);
	buf = arg.handle <= ULONG_MAX ? xa_load(&mlos.bufs, arg.handle) : NULL;
	if (!buf) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (buf->token != arg.token) {
		ret = -EACCES;
		goto out_unlock;
	}
	ret = mlos_file_ref(f, buf);
	if (ret)
		goto out_unlock;
	arg.length = buf->size;
	arg.mmap_offset = buf->handle << PAGE_SHIFT;
	mutex_unlock(&mlos.lock);

	mlos_dbg(2, "map buffer %llu\n", arg.handle);
	ret = mlos_copy_out(uarg, &arg, sizeof(arg), usize);
	if (ret) {
		mutex_lock(&mlos.lock);
		mlos_file_unref(f, arg.handle, 1);
		mutex_unlock(&mlos.lock);
	}
	return ret;

out_unlock:
	mutex_unlock(&mlos.lock);
	return ret;
}

long mlos_ioctl_tensor_unpin(struct mlos_file *f, void __user *uarg)
{
	struct mlos_tensor_unpin arg;
	u32 usize;
	int ret;

	ret = mlos_copy_in(&arg, sizeof(arg), sizeof(arg), uarg, &usize);
	if (ret)
		return ret;
	if (arg.__pad)
		return -EINVAL;
	mutex_lock(&mlos.lock);
	ret = mlos_file_unref(f, arg.handle, 1);
	mutex_unlock(&mlos.lock);
	mlos_dbg(2, "unpin buffer %llu: %d\n", arg.handle, ret);
	return ret;
}

/* release(): drop every reference the file holds. */
void mlos_file_drop_bufs(struct mlos_file *f)
{
	struct mlos_fref *ref;
	unsigned long handle;

	mutex_lock(&mlos.lock);
	xa_for_each(&f->refs, handle, ref)
		mlos_file_unref(f, handle, ref->count);
	mutex_unlock(&mlos.lock);
}

/* vm_ops: each vma holds a reference to the buffer's memory. */
static void mlos_vm_open(struct vm_area_struct *vma)
{
	struct mlos_buf *buf = vma->vm_private_data;

	kref_get(&buf->kref);
}

static void mlos_vm_close(struct vm_area_struct *vma)
{
	mlos_buf_put(vma->vm_private_data);
}

static vm_fault_t mlos_vm_fault(struct vm_fault *vmf)
{
	struct mlos_buf *buf = vmf->vma->vm_private_data;
	unsigned long idx = vmf->pgoff - buf->handle;	/* pgoff counts from the handle */
	struct page *page;

	if (vmf->pgoff < buf->handle || idx >= buf->npages)
		return VM_FAULT_SIGBUS;
	page = vmalloc_to_page(buf->vaddr + (idx << PAGE_SHIFT));
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct mlos_vm_ops = {
	.open = mlos_vm_open,
	.close = mlos_vm_close,
	.fault = mlos_vm_fault,
};

/* The file a mapping holds instead of the device file: it keeps only this module loaded. */
static const struct file_operations mlos_buf_fops = {
	.owner = THIS_MODULE,
};

int mlos_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mlos_file *f = file->private_data;
	struct file *vfile;
	struct mlos_buf *buf;
	int ret = 0;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	vfile = anon_inode_getfile("[mlos-ml-buffer]", &mlos_buf_fops, NULL, O_RDWR);
	if (IS_ERR(vfile))
		return PTR_ERR(vfile);

	mutex_lock(&mlos.lock);
	buf = mlos_file_buf(f, vma->vm_pgoff);
	if (!buf || vma_pages(vma) > buf->npages) {
		ret = -EINVAL;
		goto out_unlock;
	}
	kref_get(&buf->kref);		/* dropped by mlos_vm_close() */
	vma->vm_flags |= VM_DONTEXPAND | VM_DONTDUMP;
	vma->vm_private_data = buf;
	vma->vm_ops = &mlos_vm_ops;
	vma_set_file(vma, vfile);	/* the vma holds vfile now, not the device file */
out_unlock:
	mutex_unlock(&mlos.lock);
	fput(vfile);
	return ret;
}
