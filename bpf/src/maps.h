/* rackroute datapath: every map key and value, in one place.
 *
 * Layouts are fixed-width with explicit padding so that bpf/maps.py can mirror
 * them with ctypes (an ABI test compares both). Addresses are family neutral:
 * 16 bytes, IPv4 in the first word (network order), plus a family byte.
 * Ports are kept in network byte order everywhere.
 *
 * A program with maps of its own only (the tunnel's) defines RR_MAPS_STRUCTS_ONLY first:
 * it gets the structs and none of the service datapath's maps.
 */
#ifndef RR_MAPS_H
#define RR_MAPS_H

#ifndef RR_MAGLEV_M
#define RR_MAGLEV_M 1021 /* prime; entries per Maglev lookup table */
#endif
#ifndef RR_MAX_SERVICES
#define RR_MAX_SERVICES 65536
#endif
#ifndef RR_MAX_TABLES
#define RR_MAX_TABLES 16384 /* Maglev tables (preallocated, ~4 KB each) */
#endif
#ifndef RR_MAX_BACKENDS
#define RR_MAX_BACKENDS 65536
#endif
#ifndef RR_MAX_SRC_RANGES
#define RR_MAX_SRC_RANGES 16384 /* loadBalancerSourceRanges prefixes, all services */
#endif
#ifndef RR_CT_SIZE
#define RR_CT_SIZE 262144
#endif
#ifndef RR_CT6_SIZE
#define RR_CT6_SIZE (RR_CT_SIZE / 4)
#endif
#ifndef RR_AFFINITY_SIZE
#define RR_AFFINITY_SIZE 65536
#endif
#ifndef RR_SOCK_REVNAT_SIZE
#define RR_SOCK_REVNAT_SIZE 65536
#endif

/* rr_vips: one bit per IPv4 /24, and one per hash bucket of IPv6 /64s, that holds (or
 * held) a service address, so that a packet to anywhere else (pod to pod, pod to the
 * world) is let go after one inline array read instead of a conntrack and a service
 * lookup. IPv4: word i covers the /24s (i << 6) .. (i << 6) + 63 (host order address >>
 * 8), bit b the /24 (i << 6) + b. IPv6: bucket rr_vip6_hash(first 64 bits) mod 2^20, in the
 * words from RR_VIP6_BASE (two /64s may share a bucket: the filter may only say "maybe").
 * A bit is set before the first service entry it covers is written and never cleared,
 * so an established flow to a removed service still finds its conntrack entry. Entry
 * RR_VIPS_ARMED is nonzero once the sync has set the bits of every service: until then
 * (a map created by an upgrade) every packet takes the full path. */
#define RR_VIP4_WORDS (1 << 18) /* 2^24 /24s, 64 per word: 2 MiB */
#define RR_VIP6_BITS 20          /* 2^20 buckets: 128 KiB */
#define RR_VIP6_BASE RR_VIP4_WORDS
#define RR_VIP6_WORDS (1 << (RR_VIP6_BITS - 6))
#define RR_VIPS_ARMED (RR_VIP4_WORDS + RR_VIP6_WORDS)

/* rr_replies: the reverse path's filter. One bit per hash bucket (rr_reply_hash) of the
 * sources (address, port, protocol) that a conntrack reply entry was made for, set by
 * the program that makes the entry, before it does, and never cleared. A packet from any
 * other source (into a pod, or into the node from the network: all traffic that is no
 * reply of a translated flow) leaves the reverse path after one inline array read instead
 * of a conntrack lookup. Entry RR_REPLIES_ARMED is nonzero once the agent has marked the
 * sources of the reply entries already in the conntrack (made by programs older than the
 * filter) after attaching the programs that mark: until then every packet asks the
 * conntrack. */
#define RR_REPLY_BITS 20 /* 2^20 buckets: 128 KiB */
#define RR_REPLY_WORDS (1 << (RR_REPLY_BITS - 6))
#define RR_REPLIES_ARMED RR_REPLY_WORDS

#define RR_AF_INET 2
#define RR_AF_INET6 10

/* rr_svc_value.flags */
#define RR_SVC_LOCAL_ONLY 0x1 /* table holds node-local backends only; drop if none */
#define RR_SVC_EXTERNAL 0x2   /* NodePort / LoadBalancer / external IP entry */
#define RR_SVC_RANDOM 0x4     /* random slot instead of the 5-tuple hash */
#define RR_SVC_NODEPORT 0x8   /* vip is a node address */
#define RR_SVC_SRC_RANGES 0x10 /* new flows only from rr_src_ranges' prefixes of svc_id */

/* rr_backend.flags */
#define RR_BE_LOCAL 0x1       /* the backend runs on this node */
#define RR_BE_TERMINATING 0x2 /* serving but terminating */

/* rr_ct_key.dir */
#define RR_DIR_FORWARD 0
#define RR_DIR_REPLY 1

/* rr_ct_value.flags */
#define RR_CT_SNAT 0x1
#define RR_CT_CLOSING 0x2 /* a TCP FIN was seen: a SYN on this tuple starts a new flow */
#define RR_CT_SPORT 0x4   /* the client's source port was remapped (its address kept): its
                           * translated tuple was another live flow's (a reply key clash) */
#define RR_CT_HAIRPIN 0x8 /* a pod reached itself through a service: its source address is
                           * the service loopback address (with RR_CT_SPORT: translated
                           * like a remapped port), which the pod accepts as a peer's */

/* The service loopback address (hairpin source), as stored in struct rr_addr words:
 * 169.254.42.1 and 100::42:1 unless the loader says otherwise. */
#ifndef RR_LOOPBACK4
#define RR_LOOPBACK4 0x012afea9
#define RR_LOOPBACK6_0 0x00000001
#define RR_LOOPBACK6_1 0x00000000
#define RR_LOOPBACK6_2 0x00000000
#define RR_LOOPBACK6_3 0x01004200
#endif

struct rr_addr {
    __u32 w[4];
};

struct rr_svc_key { /* 20 bytes */
    struct rr_addr vip;
    __be16 port;
    __u8 proto;
    __u8 family;
};

struct rr_svc_value { /* 16 bytes */
    __u32 svc_id;           /* Maglev table id and reverse-NAT index */
    __u16 backend_count;    /* eligible backends in the table; 0 = refuse */
    __u16 flags;            /* RR_SVC_* */
    __u32 affinity_timeout; /* seconds; 0 = no session affinity */
    __u32 pad;
};

/* rr_src_ranges (LPM trie): the client prefixes a service entry flagged RR_SVC_SRC_RANGES
 * admits new flows from (a LoadBalancer IP's loadBalancerSourceRanges). prefixlen counts
 * the 32 bits of svc_id plus the prefix's; addresses in network order, IPv4 in the first
 * four bytes (an entry's prefixes are of its service address's family). */
struct rr_src_key { /* 24 bytes */
    __u32 prefixlen;
    __u32 svc_id;
    struct rr_addr addr;
};

struct rr_backend { /* 20 bytes; key: __u32 backend id */
    struct rr_addr addr;
    __be16 port;
    __u8 family;
    __u8 flags; /* RR_BE_* */
};

struct rr_maglev { /* key: __u32 svc_id */
    __u32 backend_ids[RR_MAGLEV_M];
};

/* The parsed tuple of either family (IPv4 in w[0]), and the IPv6 conntrack key. */
struct rr_ct_key { /* 40 bytes */
    struct rr_addr saddr;
    struct rr_addr daddr;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 family;
    __u8 dir; /* RR_DIR_* */
    __u8 pad;
};

/* Conntrack times are jiffies (low 32 bits of the kernel tick counter, read without a
 * helper call); seen is rewritten once it is RR_CT_SEEN_JIFFIES old, not on every
 * packet, so an established flow does not dirty its entry. */
#define RR_CT_SEEN_JIFFIES 100 /* at most 1 s at any HZ >= 100 */

/* An entry idle for longer than its lifetime is a miss (and is replaced or evicted):
 * seconds, times the kernel's HZ (the loader defines both from its config). */
#ifndef RR_HZ
#define RR_HZ 1000 /* the largest usual HZ: lifetimes then last at least as long as said */
#endif
#ifndef RR_CT_TCP_LIFETIME
#define RR_CT_TCP_LIFETIME 21600 /* an established TCP flow: 6 h idle */
#endif
#ifndef RR_CT_CLOSE_LIFETIME
#define RR_CT_CLOSE_LIFETIME 10 /* a TCP flow after its FIN */
#endif
#ifndef RR_CT_UDP_LIFETIME
#define RR_CT_UDP_LIFETIME 60 /* a UDP flow */
#endif

struct rr_ct6_value { /* 56 bytes */
    struct rr_addr addr;     /* forward: backend; reply: original client */
    struct rr_addr nat_addr; /* forward: SNAT source; reply: service address */
    __be16 port;             /* forward: backend port; reply: client port */
    __be16 nat_port;         /* forward: SNAT port; reply: service port */
    __u32 svc_id;
    __u32 backend_id;
    __u16 flags; /* RR_CT_* */
    __u16 pad;
    __u32 created; /* jiffies */
    __u32 seen;    /* jiffies */
};

/* IPv4 conntrack: the same fields with 4-byte addresses (smaller to hash and copy). */
struct rr_ct4_key { /* 16 bytes */
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 dir; /* RR_DIR_* */
    __u16 pad;
};

struct rr_ct4_value { /* 32 bytes */
    __be32 addr;
    __be32 nat_addr;
    __be16 port;
    __be16 nat_port;
    __u32 svc_id;
    __u32 backend_id;
    __u16 flags; /* RR_CT_* */
    __u16 pad;
    __u32 created;
    __u32 seen;
};

struct rr_aff_key { /* 24 bytes */
    struct rr_addr client;
    __u32 svc_id;
    __u8 family;
    __u8 pad[3];
};

struct rr_aff_value { /* 16 bytes */
    __u32 backend_id;
    __u32 pad;
    __u64 seen_ns;
};

struct rr_revnat_key { /* 32 bytes: socket-level reverse NAT */
    __u64 cookie;
    struct rr_addr addr; /* backend */
    __be16 port;
    __u8 family;
    __u8 proto;
    __u32 pad;
};

struct rr_revnat_value { /* 20 bytes */
    struct rr_addr vip;
    __be16 port;
    __u8 family;
    __u8 pad;
};

struct rr_config { /* array of one, written by the loader */
    struct rr_addr node_addr;  /* IPv4 SNAT source for remote backends; 0 = none */
    struct rr_addr node_addr6; /* IPv6 SNAT source; all zero = none (such flows refused) */
    __u32 uplink_ifindex;
    __u32 flags;
};

/* rr_pod_ifs: the host side of each pod veth that carries the pod programs, with its MAC
 * address (key: its ifindex). A translated packet routed out of one of them is handed
 * straight to the pod's side (bpf_redirect_peer) when the route's source MAC is this
 * one: an ifindex given to another device since (a stale entry) has another MAC.
 * LRU: entries of veths gone, never looked up again, are the first evicted. */
struct rr_pod_if { /* 8 bytes */
    __u8 mac[6];
    __u16 pad;
};

#define RR_MAX_POD_IFS 4096

/* Network policy (bpf/src/policy.c; controller/desired/policy.py compiles what they hold).
 * rr_pol_eps: a pod of this node under policy, by address: its endpoint id and the
 * directions it is isolated in. rr_pol (LPM trie): per endpoint and direction, peer
 * prefixes with the port ranges allowed; prefixlen counts the 64 bits of ep, dir, family
 * and pad, then the peer prefix's. rr_pol_ct: flows a policy decision let pass (the
 * tuple as it crossed the pod's interface, dir the RR_POL_* direction of the pod whose
 * decision it was), so their packets and replies pass after: a flow between two pods of
 * one node under policy has an entry for each pod's decision, and one pod's never stands
 * for the other's. */
#define RR_POL_INGRESS 0x1 /* rr_pol_ep.flags, and rr_pol_key.dir */
#define RR_POL_EGRESS 0x2
#define RR_POL_RANGES 8
#define RR_POL_ANY 0 /* rr_pol_range.proto: every protocol, every port */
#ifndef RR_POL_EPS
#define RR_POL_EPS 16384
#endif
#ifndef RR_POL_ENTRIES
#define RR_POL_ENTRIES 262144
#endif
#ifndef RR_POL_CT_SIZE
#define RR_POL_CT_SIZE 131072
#endif
#define RR_POL_NODE_ADDRS 1024

struct rr_pol_ep_key { /* 20 bytes */
    struct rr_addr addr;
    __u8 family;
    __u8 pad[3];
};

struct rr_pol_ep { /* 8 bytes */
    __u32 id;
    __u32 flags; /* RR_POL_INGRESS | RR_POL_EGRESS */
};

struct rr_pol_key { /* 28 bytes */
    __u32 prefixlen;
    __u32 ep;
    __u8 dir;
    __u8 family;
    __u16 pad;
    struct rr_addr peer;
};

struct rr_pol_range { /* 6 bytes; ports in host order, inclusive */
    __u8 proto; /* IPPROTO_*, or RR_POL_ANY */
    __u8 pad;
    __u16 lo;
    __u16 hi;
};

struct rr_pol_value { /* 50 bytes; count 0: nothing allowed */
    __u8 count;
    __u8 pad;
    struct rr_pol_range r[RR_POL_RANGES];
};

/* rr_pol_frags: the ports of a fragmented packet, from its first fragment, for the later
 * ones (which carry none) of a pod under policy. */
#ifndef RR_POL_FRAGS
#define RR_POL_FRAGS 8192
#endif

struct rr_pol_frag_key { /* 40 bytes */
    struct rr_addr saddr;
    struct rr_addr daddr;
    __u32 id; /* IPv4: the identification (16 bits); IPv6: the fragment header's */
    __u8 proto;
    __u8 family;
    __u16 pad;
};

struct rr_pol_ports { /* 4 bytes */
    __be16 sport;
    __be16 dport;
};

/* the tunnel datapath's (tunnel.c): rr_tun_routes (IPv4) and rr_tun_routes6 (IPv6) are
 * LPM tries from a remote pod CIDR to its node */
struct rr_tun_key { /* 8 bytes */
    __u32 prefixlen;
    __u32 addr; /* network order */
};

struct rr_tun_key6 { /* 20 bytes */
    __u32 prefixlen;
    __u8 addr[16];
};

struct rr_tun_val { /* 24 bytes */
    __u32 remote[4]; /* remote node address as on the wire (IPv4: the first word) */
    __u8 mac[6];     /* remote VTEP MAC (inner Ethernet destination) */
    __u16 pad;
};

#ifndef RR_MAPS_STRUCTS_ONLY
#ifdef RR_PIN_DIR
#define RR_MAP(type, k, v, name, max) \
    BPF_TABLE_PINNED(type, k, v, name, max, RR_PIN_DIR "/" #name)
#define RR_MAP_F(type, k, v, name, max, fl) \
    BPF_TABLE_PINNED(type, k, v, name, max, RR_PIN_DIR "/" #name, fl)
#else
#define RR_MAP(type, k, v, name, max) BPF_TABLE(type, k, v, name, max)
#define RR_MAP_F(type, k, v, name, max, fl) BPF_F_TABLE(type, k, v, name, max, fl)
#endif

RR_MAP("hash", struct rr_svc_key, struct rr_svc_value, rr_svc, RR_MAX_SERVICES);
RR_MAP("hash", __u32, struct rr_backend, rr_backend, RR_MAX_BACKENDS);
RR_MAP_F("lpm_trie", struct rr_src_key, __u32, rr_src_ranges, RR_MAX_SRC_RANGES,
         BPF_F_NO_PREALLOC);
/* preallocated: a write then copies a table instead of allocating one (3x faster) */
RR_MAP("hash", __u32, struct rr_maglev, rr_maglev, RR_MAX_TABLES);
RR_MAP("lru_hash", struct rr_ct4_key, struct rr_ct4_value, rr_ct, RR_CT_SIZE); /* IPv4 */
RR_MAP("lru_hash", struct rr_ct_key, struct rr_ct6_value, rr_ct6, RR_CT6_SIZE);
RR_MAP("lru_hash", struct rr_aff_key, struct rr_aff_value, rr_affinity, RR_AFFINITY_SIZE);
RR_MAP("lru_hash", struct rr_revnat_key, struct rr_revnat_value, rr_revnat,
       RR_SOCK_REVNAT_SIZE);
RR_MAP("array", __u32, struct rr_config, rr_config, 1);
RR_MAP("array", __u32, __u64, rr_vips, RR_VIPS_ARMED + 1);
RR_MAP("array", __u32, __u64, rr_replies, RR_REPLIES_ARMED + 1);
RR_MAP("lru_hash", __u32, struct rr_pod_if, rr_pod_ifs, RR_MAX_POD_IFS);
#ifdef RR_POLICY_MAPS /* the policy part's, and the pod part's under network policy */
RR_MAP("hash", struct rr_pol_ep_key, struct rr_pol_ep, rr_pol_eps, RR_POL_EPS);
RR_MAP_F("lpm_trie", struct rr_pol_key, struct rr_pol_value, rr_pol, RR_POL_ENTRIES,
         BPF_F_NO_PREALLOC);
RR_MAP("lru_hash", struct rr_ct_key, __u32, rr_pol_ct, RR_POL_CT_SIZE);
/* the node's own addresses (value 1): its traffic to and from its pods is always allowed,
 * and a pod sending from one of them is spoofing */
RR_MAP("hash", struct rr_pol_ep_key, __u32, rr_pol_node, RR_POL_NODE_ADDRS);
RR_MAP("lru_hash", struct rr_pol_frag_key, struct rr_pol_ports, rr_pol_frags, RR_POL_FRAGS);
enum { RR_POL_PASSED, RR_POL_DROPPED, RR_POL_NEW, RR_POL_STATS };
RR_MAP("percpu_array", __u32, __u64, rr_pol_stats, RR_POL_STATS);
/* packets refused per endpoint id, indexed by it (the agent zeroes an id it frees; an id
 * past the array is counted in rr_pol_stats only) */
RR_MAP("percpu_array", __u32, __u64, rr_pol_drops, RR_POL_EPS);
#endif
#endif /* RR_MAPS_STRUCTS_ONLY */

#endif
