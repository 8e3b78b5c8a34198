/* rackroute tunnel datapath: Geneve (UDP 6081) or VXLAN (UDP 8472) in TC, no tunnel
 * device needed from the kernel.
 *
 * rr_tun_encap, egress of the ARP-less tunnel device (rr.tun): the inner destination is
 *   looked up in rr_tun_routes (IPv4) or rr_tun_routes6 (IPv6) (LPM: pod CIDR -> remote
 *   node address + VTEP MAC); the packet grows after its Ethernet header by the outer
 *   IP header, UDP, the Geneve or VXLAN header and an inner Ethernet header (50 bytes
 *   over an IPv4 underlay, 70 over IPv6) and leaves the underlay through a FIB + neighbor
 *   lookup. The underlay is one family (RR_TUN_V6) for both inner families; the outer
 *   TOS or traffic class is the inner one, and over IPv6 the flow label carries the
 *   inner flow's hash (as the UDP source port does). The UDP checksum is zero, which
 *   RFC 6935 allows tunnels over IPv6 (the receiving end is rr_tun_decap, or a kernel
 *   VXLAN device with udp6zerocsumrx). Other protocols are dropped.
 * rr_tun_decap, ingress of the underlay: UDP to our port and address with our VNI is
 *   stripped back to the inner IPv4 or IPv6 packet and passed up (skb->protocol then
 *   names the inner family, or the packet is dropped); anything else continues
 *   untouched (TC_ACT_UNSPEC, so later filters still run).
 *
 * Compile-time constants (bpf/tunnel.py defines them): RR_TUN_PORT, RR_TUN_GENEVE,
 * RR_TUN_VNI, RR_TUN_V6 (1: IPv6 underlay), RR_TUN_LOCAL (IPv4 node address, network
 * order) or RR_TUN_LOCAL6_0..3 (the IPv6 one's four words as loaded), RR_TUN_IFINDEX
 * (underlay), RR_TUN_MAC0..5 (this node's VTEP MAC).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/pkt_cls.h>
#define RR_MAPS_STRUCTS_ONLY /* its map keys and values; none of the service maps */
#include "maps.h"

#ifndef RR_TUN_V6
#define RR_TUN_V6 0
#endif
#define RR_TUN_ETH 14
#define RR_TUN_HDR 8
#if RR_TUN_V6
#define RR_TUN_L3 40
#define RR_TUN_OUTER_PROTO ETH_P_IPV6
#else
#define RR_TUN_L3 20
#define RR_TUN_OUTER_PROTO ETH_P_IP
#endif
#define RR_TUN_OVERHEAD (RR_TUN_L3 + 8 + RR_TUN_HDR + RR_TUN_ETH)
#define RR_ETH_P_TEB 0x6558
/* Newer than bcc's bpf.h: kernel UAPI values of BPF_F_ADJ_ROOM_DECAP_L3_IPV4/IPV6. */
#define RR_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define RR_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#define RR_IP6_DADDR 24 /* offset of the destination in the IPv6 header */

/* bcc declares bpf_redirect_neigh with three arguments; the helper takes four. */
static long (*rr_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
                                 __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

enum {
    RR_TUN_ENCAP_PKTS,
    RR_TUN_ENCAP_BYTES,
    RR_TUN_DECAP_PKTS,
    RR_TUN_DECAP_BYTES,
    RR_TUN_MISS,
    RR_TUN_ERR,
    RR_TUN_STATS,
};

BPF_F_TABLE("lpm_trie", struct rr_tun_key, struct rr_tun_val, rr_tun_routes, 65536,
            BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct rr_tun_key6, struct rr_tun_val, rr_tun_routes6, 65536,
            BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(rr_tun_stats, __u64, RR_TUN_STATS);

struct rr_tun_outer {
#if RR_TUN_V6
    struct ipv6hdr ip;
#else
    struct iphdr ip;
#endif
    struct udphdr udp;
    __u8 tun[RR_TUN_HDR];
    struct ethhdr eth;
} __attribute__((packed));

static __always_inline void rr_tun_count(int idx, __u64 bytes)
{
    int k = idx;
    __u64 *c = rr_tun_stats.lookup(&k);

    if (c)
        *c += 1;
    k = idx + 1;
    c = rr_tun_stats.lookup(&k);
    if (c && bytes)
        *c += bytes;
}

static __always_inline __u16 rr_tun_csum(struct iphdr *ip)
{
    __u16 *w = (__u16 *)ip;
    __u32 sum = 0;

#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += w[i];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

/* The IPv4 packet's tunnel entry (NULL: no route), its TOS in *tos; -1: unreadable. */
static __always_inline int rr_tun_find4(struct __sk_buff *skb, struct rr_tun_val **v,
                                        __u8 *tos)
{
    struct rr_tun_key key = {};
    struct iphdr inner;

    if (bpf_skb_load_bytes(skb, RR_TUN_ETH, &inner, sizeof(inner)) < 0)
        return -1;
    key.prefixlen = 32;
    key.addr = inner.daddr;
    *tos = inner.tos;
    *v = rr_tun_routes.lookup(&key);
    return 0;
}

/* The same for IPv6: the traffic class straddles the first two bytes. */
static __always_inline int rr_tun_find6(struct __sk_buff *skb, struct rr_tun_val **v,
                                        __u8 *tos)
{
    struct rr_tun_key6 key = {};
    __u8 vtc[2];

    if (bpf_skb_load_bytes(skb, RR_TUN_ETH, vtc, sizeof(vtc)) < 0 ||
        bpf_skb_load_bytes(skb, RR_TUN_ETH + RR_IP6_DADDR, key.addr, sizeof(key.addr)) < 0)
        return -1;
    key.prefixlen = 128;
    *tos = (__u8)((vtc[0] << 4) | (vtc[1] >> 4));
    *v = rr_tun_routes6.lookup(&key);
    return 0;
}

/* The outer IP header of an encapsulated packet of skb->len bytes (its Ethernet header
 * included) to remote, with the inner TOS or traffic class and the flow's hash. */
#if RR_TUN_V6
static __always_inline void rr_tun_outer_ip(struct rr_tun_outer *h, const __u32 *remote,
                                            __u32 len, __u8 tos, __u32 hash)
{
    __u32 *s = (__u32 *)&h->ip.saddr, *d = (__u32 *)&h->ip.daddr;

    h->ip.version = 6;
    h->ip.priority = tos >> 4;
    h->ip.flow_lbl[0] = ((tos & 0xf) << 4) | ((hash >> 16) & 0xf);
    h->ip.flow_lbl[1] = (hash >> 8) & 0xff;
    h->ip.flow_lbl[2] = hash & 0xff;
    h->ip.payload_len = htons(len - RR_TUN_ETH - RR_TUN_L3);
    h->ip.nexthdr = IPPROTO_UDP;
    h->ip.hop_limit = 64;
    s[0] = RR_TUN_LOCAL6_0;
    s[1] = RR_TUN_LOCAL6_1;
    s[2] = RR_TUN_LOCAL6_2;
    s[3] = RR_TUN_LOCAL6_3;
    d[0] = remote[0];
    d[1] = remote[1];
    d[2] = remote[2];
    d[3] = remote[3];
}
#else
static __always_inline void rr_tun_outer_ip(struct rr_tun_outer *h, const __u32 *remote,
                                            __u32 len, __u8 tos, __u32 hash)
{
    h->ip.version = 4;
    h->ip.ihl = 5;
    h->ip.tos = tos;
    h->ip.tot_len = htons(len - RR_TUN_ETH);
    h->ip.ttl = 64;
    h->ip.protocol = IPPROTO_UDP;
    h->ip.saddr = RR_TUN_LOCAL;
    h->ip.daddr = remote[0];
    h->ip.check = rr_tun_csum(&h->ip);
}
#endif

int rr_tun_encap(struct __sk_buff *skb)
{
    struct rr_tun_outer h = {};
    struct rr_tun_val *v = NULL;
    __u16 proto = skb->protocol; /* the inner family; adjust_room sets the outer one */
    __u32 remote[4], hash;
    __u8 mac[6];
    __u8 tos = 0;
    __u64 flags;
    int found;

    if (proto == htons(ETH_P_IP))
        found = rr_tun_find4(skb, &v, &tos);
    else if (proto == htons(ETH_P_IPV6))
        found = rr_tun_find6(skb, &v, &tos);
    else
        return TC_ACT_SHOT;
    if (found < 0)
        return TC_ACT_SHOT;
    if (!v) {
        rr_tun_count(RR_TUN_MISS, 0);
        return TC_ACT_SHOT;
    }
    __builtin_memcpy(remote, v->remote, sizeof(remote));
    __builtin_memcpy(mac, v->mac, 6);
    hash = bpf_get_hash_recalc(skb);

    flags = (RR_TUN_V6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) |
            BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
            BPF_F_ADJ_ROOM_ENCAP_L2(RR_TUN_ETH) | BPF_F_ADJ_ROOM_FIXED_GSO;
    if (bpf_skb_adjust_room(skb, RR_TUN_OVERHEAD, BPF_ADJ_ROOM_MAC, flags) < 0) {
        rr_tun_count(RR_TUN_ERR, 0);
        return TC_ACT_SHOT;
    }
    if (skb->protocol != htons(RR_TUN_OUTER_PROTO)) { /* the neighbor lookup follows it */
        rr_tun_count(RR_TUN_ERR, 0);
        return TC_ACT_SHOT;
    }

    rr_tun_outer_ip(&h, remote, skb->len, tos, hash);
    h.udp.source = htons(49152 | (hash & 0x3fff));
    h.udp.dest = htons(RR_TUN_PORT);
    h.udp.len = htons(skb->len - RR_TUN_ETH - RR_TUN_L3);
    h.udp.check = 0;

#if RR_TUN_GENEVE
    h.tun[0] = 0; /* version 0, no options */
    h.tun[1] = 0;
    h.tun[2] = RR_ETH_P_TEB >> 8;
    h.tun[3] = RR_ETH_P_TEB & 0xff;
#else
    h.tun[0] = 0x08; /* VNI present */
#endif
    h.tun[4] = (RR_TUN_VNI >> 16) & 0xff;
    h.tun[5] = (RR_TUN_VNI >> 8) & 0xff;
    h.tun[6] = RR_TUN_VNI & 0xff;

    __builtin_memcpy(h.eth.h_dest, mac, 6);
    h.eth.h_source[0] = RR_TUN_MAC0;
    h.eth.h_source[1] = RR_TUN_MAC1;
    h.eth.h_source[2] = RR_TUN_MAC2;
    h.eth.h_source[3] = RR_TUN_MAC3;
    h.eth.h_source[4] = RR_TUN_MAC4;
    h.eth.h_source[5] = RR_TUN_MAC5;
    h.eth.h_proto = proto;

    if (bpf_skb_store_bytes(skb, RR_TUN_ETH, &h, sizeof(h), 0) < 0) {
        rr_tun_count(RR_TUN_ERR, 0);
        return TC_ACT_SHOT;
    }
    rr_tun_count(RR_TUN_ENCAP_PKTS, skb->len);
    return rr_redirect_neigh(RR_TUN_IFINDEX, NULL, 0, 0);
}

/* Is the outer header h a packet of our protocol to this node (UDP, unfragmented)? */
#if RR_TUN_V6
static __always_inline int rr_tun_ours(const struct rr_tun_outer *h)
{
    const __u32 *d = (const __u32 *)&h->ip.daddr;

    return h->ip.version == 6 && h->ip.nexthdr == IPPROTO_UDP && d[0] == RR_TUN_LOCAL6_0 &&
           d[1] == RR_TUN_LOCAL6_1 && d[2] == RR_TUN_LOCAL6_2 && d[3] == RR_TUN_LOCAL6_3 &&
           h->udp.dest == htons(RR_TUN_PORT);
}
#else
static __always_inline int rr_tun_ours(const struct rr_tun_outer *h)
{
    return h->ip.version == 4 && h->ip.ihl == 5 && h->ip.protocol == IPPROTO_UDP &&
           h->ip.daddr == RR_TUN_LOCAL && h->udp.dest == htons(RR_TUN_PORT) &&
           !(h->ip.frag_off & htons(0x3fff)); /* fragments: not ours to reassemble */
}
#endif

int rr_tun_decap(struct __sk_buff *skb)
{
    struct rr_tun_outer h;
    __u32 optlen = 0;
    __u64 decap;
    __u16 proto;

    if (skb->protocol != htons(RR_TUN_OUTER_PROTO))
        return TC_ACT_UNSPEC;
    if (bpf_skb_load_bytes(skb, RR_TUN_ETH, &h, sizeof(h) - sizeof(h.eth)) < 0)
        return TC_ACT_UNSPEC;
    if (!rr_tun_ours(&h))
        return TC_ACT_UNSPEC; /* an IPv6 packet with extension headers is not ours either */
#if RR_TUN_GENEVE
    if ((h.tun[0] >> 6) != 0 || h.tun[2] != (RR_ETH_P_TEB >> 8) ||
        h.tun[3] != (RR_ETH_P_TEB & 0xff))
        goto bad;
    optlen = (h.tun[0] & 0x3f) * 4;
#else
    if (!(h.tun[0] & 0x08))
        goto bad;
#endif
    if (h.tun[4] != ((RR_TUN_VNI >> 16) & 0xff) || h.tun[5] != ((RR_TUN_VNI >> 8) & 0xff) ||
        h.tun[6] != (RR_TUN_VNI & 0xff))
        goto bad;
    if (bpf_skb_load_bytes(skb, RR_TUN_ETH + RR_TUN_OVERHEAD - 2 + optlen, &proto,
                           sizeof(proto)) < 0)
        goto bad;
    if (proto == htons(ETH_P_IP))
        decap = RR_ADJ_ROOM_DECAP_L3_IPV4;
    else if (proto == htons(ETH_P_IPV6))
        decap = RR_ADJ_ROOM_DECAP_L3_IPV6;
    else
        goto bad;
    if (bpf_skb_adjust_room(skb, -(__s32)(RR_TUN_OVERHEAD + optlen), BPF_ADJ_ROOM_MAC,
                            BPF_F_ADJ_ROOM_FIXED_GSO | decap) < 0)
        goto bad;
    /* The stack dispatches on skb->protocol: it must name the inner family now. */
    if (skb->protocol != proto)
        goto bad;
    /* The outer Ethernet header stays; its type follows the inner packet's. */
    if (proto != htons(RR_TUN_OUTER_PROTO) &&
        bpf_skb_store_bytes(skb, RR_TUN_ETH - 2, &proto, sizeof(proto), 0) < 0)
        goto bad;
    rr_tun_count(RR_TUN_DECAP_PKTS, skb->len);
    return TC_ACT_OK;
bad:
    rr_tun_count(RR_TUN_ERR, 0);
    return TC_ACT_SHOT;
}
