// Single-file Java program (JEP 330):
//   java -cp "$JARS/*" tests/java/ClientCheck.java BOOTSTRAP TOPIC_PREFIX [COUNT]
// For each compression type: creates TOPIC_PREFIX-<codec> (3 partitions) with the Java
// AdminClient, produces COUNT records with the default producer settings (acks=all,
// idempotence on) plus compression.type, then consumes them back with a consumer group
// and checks counts, content, offsets and committed positions. Exit code 0 = all good.
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class ClientCheck {
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    static final int PARTITIONS = 3;

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: ClientCheck BOOTSTRAP TOPIC_PREFIX [COUNT]");
            System.exit(2);
        }
        String bootstrap = args[0];
        String prefix = args[1];
        int count = args.length > 2 ? Integer.parseInt(args[2]) : 1000;
        int failures = 0;
        for (String codec : CODECS) {
            String topic = prefix + "-" + codec;
            long start = System.nanoTime();
            try {
                check(bootstrap, topic, codec, count);
                System.out.printf("OK %s %d records in %d ms%n", codec, count, (System.nanoTime() - start) / 1_000_000);
            } catch (Throwable t) {
                failures++;
                System.out.println("FAIL " + codec + ": " + t);
                t.printStackTrace(System.out);
            }
            System.out.flush();
        }
        System.out.println(failures == 0 ? "ALL OK" : failures + " FAILED");
        System.exit(failures == 0 ? 0 : 1);
    }

    static void require(boolean cond, String msg) {
        if (!cond) throw new AssertionError(msg);
    }

    static String valueFor(String codec, int i) {
        StringBuilder sb = new StringBuilder(codec).append('-').append(i).append('|');
        // compressible filler of varying length
        for (int j = 0; j < i % 37; j++) sb.append("chronik-");
        return sb.toString();
    }

    /** Wait until every partition's leader answers ListOffsets: producing into a partition
     *  that is not loaded yet can make the idempotent producer's first batch fail while
     *  later ones succeed (then OUT_OF_ORDER_SEQUENCE_NUMBER until delivery.timeout.ms). */
    static void awaitPartitionsServing(Admin admin, String topic) throws InterruptedException {
        Map<TopicPartition, org.apache.kafka.clients.admin.OffsetSpec> req = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) req.put(new TopicPartition(topic, p), org.apache.kafka.clients.admin.OffsetSpec.latest());
        long deadline = System.currentTimeMillis() + 30_000;
        while (true) {
            try {
                admin.listOffsets(req).all().get(10, TimeUnit.SECONDS);
                return;
            } catch (Exception e) {
                if (System.currentTimeMillis() > deadline) throw new AssertionError("partitions of " + topic + " not serving: " + e);
                Thread.sleep(200);
            }
        }
    }

    static void check(String bootstrap, String topic, String codec, int count) throws Exception {
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
            awaitPartitionsServing(admin, topic);
        }

        // default producer settings (acks=all, enable.idempotence=true) + compression
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        Map<TopicPartition, List<Long>> acked = new HashMap<>();
        Set<String> expected = new HashSet<>();
        KafkaProducer<String, String> producer = new KafkaProducer<>(pp);
        try {
            List<Future<RecordMetadata>> futures = new ArrayList<>(count);
            for (int i = 0; i < count; i++) {
                String v = valueFor(codec, i);
                expected.add(v);
                futures.add(producer.send(new ProducerRecord<>(topic, "key-" + (i % 11), v)));
            }
            long deadline = System.currentTimeMillis() + 90_000;
            for (Future<RecordMetadata> f : futures) {
                RecordMetadata md = f.get(Math.max(1, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
                acked.computeIfAbsent(new TopicPartition(topic, md.partition()), k -> new ArrayList<>()).add(md.offset());
            }
        } finally {
            producer.close(Duration.ofSeconds(5)); // bounded, unlike try-with-resources
        }
        Map<TopicPartition, Long> expectedEnd = new TreeMap<>((a, b) -> Integer.compare(a.partition(), b.partition()));
        for (Map.Entry<TopicPartition, List<Long>> e : acked.entrySet()) {
            List<Long> offs = e.getValue();
            Collections.sort(offs);
            for (int i = 0; i < offs.size(); i++) {
                require(offs.get(i) == i, "acked offsets of " + e.getKey() + " are not 0.." + (offs.size() - 1) + ": " + offs.subList(0, Math.min(10, offs.size())));
            }
            expectedEnd.put(e.getKey(), (long) offs.size());
        }

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, "clientcheck-" + topic);
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Set<String> seen = new HashSet<>();
        int received = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 90_000;
            while (received < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    received++;
                    require(seen.add(r.value()), "duplicate record " + r.value() + " at " + r.partition() + "@" + r.offset());
                    require(expected.contains(r.value()), "unexpected record " + r.value());
                }
            }
            // anything extra arriving shortly after?
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                received++;
                require(false, "extra record " + r.value() + " at " + r.partition() + "@" + r.offset());
            }
            require(received == count, "consumed " + received + " of " + count + " records");
            consumer.commitSync(Duration.ofSeconds(30));
            Map<TopicPartition, Long> end = consumer.endOffsets(expectedEnd.keySet(), Duration.ofSeconds(30));
            require(end.equals(expectedEnd), "end offsets " + end + " != acked " + expectedEnd);
            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(expectedEnd.keySet(), Duration.ofSeconds(30));
            for (TopicPartition tp : expectedEnd.keySet()) {
                OffsetAndMetadata om = committed.get(tp);
                require(om != null && om.offset() == expectedEnd.get(tp), "committed " + om + " != " + expectedEnd.get(tp) + " for " + tp);
            }
        }
        require(seen.equals(expected), "consumed set differs from produced set");
    }
}
