// kclient: a small Kafka client built on franz-go, packed into an image so that pods (the
// chart's `helm test` hook, the e2e suite's in-cluster clients) produce and consume with a
// real client. Every producer is idempotent with acks=all.
//
//	kclient check   -brokers B -topic T            produce one record, read it back
//	kclient produce -brokers B -topic T -rate 200 -duration 60s
//	                 (SIGTERM ends it early) prints one line per acknowledged record ("ack <seq> <partition> <offset>")
//	                 and, at the end, a summary line with the longest stall between acks;
//	                 a stall over 1 s is printed when it ends ("stall <ms>ms ended <time>
//	                 by partition <p>"), and franz-go's info log goes to stderr
//	kclient verify  -brokers B -topic T -expect N  reads the topic from the start up to the
//	                 end offsets its partitions had when it started; prints the sequence
//	                 numbers it found as ranges ("seen 0-99,101-250"), and fails if it
//	                 found fewer than N distinct ones or did not reach every end
//
// Output is line-oriented so that a test can read it from `kubectl logs`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kclient check|produce|verify [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	brokers := fs.String("brokers", "localhost:9092", "bootstrap servers, comma-separated")
	topic := fs.String("topic", "kclient", "topic")
	rate := fs.Int("rate", 100, "records per second (produce)")
	duration := fs.Duration("duration", 30*time.Second, "how long to produce")
	expect := fs.Int("expect", 0, "distinct records verify must find")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	_ = fs.Parse(os.Args[2:])
	seeds := strings.Split(*brokers, ",")

	var err error
	switch os.Args[1] {
	case "check":
		err = check(seeds, *topic, *timeout)
	case "produce":
		err = produce(seeds, *topic, *rate, *duration, *timeout)
	case "verify":
		err = verify(seeds, *topic, *expect, *timeout)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func producer(seeds []string, topic string, timeout time.Duration) (*kgo.Client, error) {
	return kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(timeout),
		kgo.AllowAutoTopicCreation(),
		kgo.ProducerLinger(5*time.Millisecond),
		// The client's own account of metadata refreshes, moved partitions and
		// connections, on stderr with timestamps: what explains a stall.
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelInfo, func() string {
			return time.Now().Format("15:04:05.000 ")
		})),
	)
}

func check(seeds []string, topic string, timeout time.Duration) error {
	cl, err := producer(seeds, topic, timeout)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	value := fmt.Sprintf("check-%d", time.Now().UnixNano())
	r, err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(value)}).First()
	if err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	fmt.Printf("produced %s to partition %d offset %d\n", value, r.Partition, r.Offset)
	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {r.Partition: kgo.NewOffset().At(r.Offset)},
		}),
	)
	if err != nil {
		return err
	}
	defer consumer.Close()
	for {
		fetches := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("record not read back within %s", timeout)
		}
		var found bool
		fetches.EachRecord(func(rec *kgo.Record) {
			found = found || string(rec.Value) == value
		})
		if found {
			fmt.Println("consumed it back: ok")
			return nil
		}
	}
}

func produce(seeds []string, topic string, rate int, duration, timeout time.Duration) error {
	cl, err := producer(seeds, topic, timeout)
	if err != nil {
		return err
	}
	defer cl.Close()
	var (
		mu       sync.Mutex
		lastAck  = time.Now()
		maxStall time.Duration
		acked    int
		failed   int
		wg       sync.WaitGroup
	)
	interval := time.Second / time.Duration(rate)
	// SIGTERM ends production early (the e2e suite stops a producer once its scenario is
	// over): no new records, the outstanding ones are awaited and counted as usual.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	deadline := time.After(duration)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
produce:
	for seq := 0; ; seq++ {
		select {
		case <-ticker.C:
		case <-deadline:
			break produce
		case <-stop:
			fmt.Fprintln(os.Stderr, "stop requested: waiting for the outstanding records")
			break produce
		}
		wg.Add(1)
		value := strconv.Itoa(seq)
		cl.Produce(context.Background(), &kgo.Record{Value: []byte(value)}, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				fmt.Printf("fail %s %v\n", value, err)
				return
			}
			now := time.Now()
			d := now.Sub(lastAck)
			if d > maxStall {
				maxStall = d
			}
			if d > time.Second {
				// Where a stall ended, to line it up with the client's log and the brokers'.
				fmt.Printf("stall %dms ended %s by partition %d\n", d.Milliseconds(), now.Format("15:04:05.000"), r.Partition)
			}
			lastAck = now
			acked++
			fmt.Printf("ack %s %d %d\n", value, r.Partition, r.Offset)
		})
	}
	wg.Wait()
	fmt.Printf("summary acked=%d failed=%d max_stall_ms=%d\n", acked, failed, maxStall.Milliseconds())
	if failed > 0 {
		return fmt.Errorf("%d records not acknowledged", failed)
	}
	return nil
}

func verify(seeds []string, topic string, expect int, timeout time.Duration) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Read up to the end every partition had when verify started, not merely until
	// enough distinct values turned up: a topic written by an earlier producer holds the
	// same sequence numbers, and stopping early would miss a partition not yet read.
	ends, err := endOffsets(ctx, cl, topic)
	if err != nil {
		return err
	}
	next := map[int32]int64{}
	behind := func() int {
		n := 0
		for p, end := range ends {
			if next[p] < end {
				n++
			}
		}
		return n
	}
	seen := map[string]bool{}
	records := 0
	for len(seen) < expect || behind() > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				fmt.Printf("fetch error %s[%d]: %v\n", t, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			records++
			seen[string(r.Value)] = true
			next[r.Partition] = r.Offset + 1
		})
	}
	fmt.Printf("seen %s\n", ranges(seen))
	fmt.Printf("summary records=%d distinct=%d partitions_not_read_to_end=%d\n", records, len(seen), behind())
	if len(seen) < expect {
		return fmt.Errorf("found %d distinct records, expected %d", len(seen), expect)
	}
	if n := behind(); n > 0 {
		return fmt.Errorf("%d partitions not read to their end within %s", n, timeout)
	}
	return nil
}

// endOffsets asks for the topic's partitions and each one's log end offset, retrying
// while a partition has no leader (a broker is restarting or leadership is moving).
func endOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	for {
		ends, err := tryEndOffsets(ctx, cl, topic)
		if err == nil {
			return ends, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func tryEndOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	metaResp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	list := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	for _, t := range metaResp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return nil, err
		}
		for _, p := range t.Partitions {
			lp := kmsg.NewListOffsetsRequestTopicPartition()
			lp.Partition = p.Partition
			lp.Timestamp = -1 // the log end offset
			lt.Partitions = append(lt.Partitions, lp)
		}
	}
	if len(lt.Partitions) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	list.Topics = append(list.Topics, lt)
	listResp, err := list.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	ends := map[int32]int64{}
	for _, t := range listResp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("partition %d: %w", p.Partition, err)
			}
			ends[p.Partition] = p.Offset
		}
	}
	if len(ends) != len(lt.Partitions) {
		return nil, fmt.Errorf("end offsets for %d of %d partitions", len(ends), len(lt.Partitions))
	}
	return ends, nil
}

// ranges writes the integer values of seen as sorted ranges: "0-99,101-250".
func ranges(seen map[string]bool) string {
	var nums []int
	for v := range seen {
		if n, err := strconv.Atoi(v); err == nil {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	var parts []string
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(nums[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", nums[i], nums[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
