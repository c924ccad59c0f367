package bucket

import (
	"context"
	"io"
	"sync/atomic"
)

// Counting is a Store that counts the requests made through it: one per
// Get, Stat, Put and Delete, one per List call. Fleet reads report it, and
// request budgets are measured with it.
type Counting struct {
	Store
	n atomic.Int64
}

// Requests is how many requests were made so far.
func (c *Counting) Requests() int64 { return c.n.Load() }

func (c *Counting) Get(ctx context.Context, key string, o GetOptions) (*Object, error) {
	c.n.Add(1)
	return c.Store.Get(ctx, key, o)
}

func (c *Counting) Stat(ctx context.Context, key string) (Info, error) {
	c.n.Add(1)
	return c.Store.Stat(ctx, key)
}

func (c *Counting) List(ctx context.Context, prefix string, fn func(Info) error) error {
	c.n.Add(1)
	return c.Store.List(ctx, prefix, fn)
}

func (c *Counting) ListAfter(ctx context.Context, prefix, after string, fn func(Info) error) error {
	c.n.Add(1)
	return c.Store.ListAfter(ctx, prefix, after, fn)
}

func (c *Counting) Put(ctx context.Context, key string, r io.Reader, size int64, o PutOptions) (string, error) {
	c.n.Add(1)
	return c.Store.Put(ctx, key, r, size, o)
}

func (c *Counting) Delete(ctx context.Context, key string) error {
	c.n.Add(1)
	return c.Store.Delete(ctx, key)
}
