/* ICMP errors about translated flows, reverse-translated as the kernel's NAT does for
 * "related" packets: an error (destination unreachable, fragmentation needed or packet
 * too big, time exceeded) carries the start of the packet it answers, which left with
 * the backend's address. The client's socket knows the service address, so without this
 * it would never see the error: path MTU discovery through a service would stall, and a
 * UDP client would never learn that a backend refused its port.
 *
 * The embedded packet (client -> backend) is the reverse of a reply entry's tuple. With
 * that entry found (not SNAT'd: those flows' errors reach the node's own address), the
 * embedded destination gets the service address and port back (and the client's own
 * port, after a remap), and when the backend itself sent the error, so does its outer
 * source. Checksums are updated in place; every change is balanced by its checksum's
 * change, so a packet's CHECKSUM_COMPLETE sum stays right. Only the common shapes are
 * handled: no IPv4 options, no IPv6 extension headers, outer or inner. Errors about
 * SNAT'd flows come back to the node's address and are translated on the uplink
 * (rr_icmp_reverse_snat).
 */
#ifndef RR_LIB_ICMP_H
#define RR_LIB_ICMP_H

#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>

#include "lib/nat.h"

#define RR_ICMP_OFF (RR_ETH_LEN + 20)          /* IPv4: the ICMP header */
#define RR_ICMP_INNER (RR_ICMP_OFF + 8)        /* the embedded IPv4 header */
#define RR_ICMP6_OFF (RR_ETH_LEN + RR_IP6_LEN) /* IPv6: the ICMPv6 header */
#define RR_ICMP6_INNER (RR_ICMP6_OFF + 8)      /* the embedded IPv6 header */

/* RFC 1624: checksum *c after 32-bit sum s of (~old + new) words was added. */
static __always_inline void rr_csum_apply(__sum16 *c, __u32 s)
{
    __u64 t = (__u64)(__u16)~*c + s;

    t = (t & 0xffff) + (t >> 16);
    t = (t & 0xffff) + (t >> 16);
    t = (t & 0xffff) + (t >> 16);
    *c = (__u16)~t;
}

static __always_inline __u32 rr_csum_diff2(__be16 from, __be16 to)
{
    return (__u16)~from + (__u32)to;
}

static __always_inline int rr_icmp4_reverse(struct __sk_buff *skb)
{
    struct rr_ct4_key k = {};
    struct rr_ct4_value *v;
    struct iphdr *ip, *in;
    struct icmphdr *ic;
    void *data, *end;
    __be32 old_addr;
    __be16 *ports;
    __u32 s;

    if (rr_linear(skb, RR_ICMP_INNER + 20 + 4) < 0)
        return 0;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip = data + RR_ETH_LEN;
    ic = data + RR_ICMP_OFF;
    in = data + RR_ICMP_INNER;
    ports = data + RR_ICMP_INNER + 20;
    if ((void *)(ports + 2) > end)
        return 0;
    if (ip->ihl != 5 || ip->protocol != IPPROTO_ICMP || (ip->frag_off & htons(0x1fff)))
        return 0;
    if (ic->type != ICMP_DEST_UNREACH && ic->type != ICMP_TIME_EXCEEDED)
        return 0;
    if (in->ihl != 5 || (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
        return 0;
    k.saddr = in->daddr;
    k.daddr = in->saddr;
    k.sport = ports[1];
    k.dport = ports[0];
    k.proto = in->protocol;
    k.dir = RR_DIR_REPLY;
    v = rr_ct.lookup(&k);
    if (!v || (v->flags & RR_CT_SNAT) ||
        (__u32)bpf_jiffies64() - v->seen > rr_ct_lifetime(k.proto, v->flags))
        return 0;
    old_addr = in->daddr;
    in->daddr = v->nat_addr;
    rr_ip4_csum_replace(in, old_addr, v->nat_addr); /* the inner header's sum is kept */
    s = rr_csum_diff2(ports[1], v->nat_port);
    ports[1] = v->nat_port;
    if (v->flags & RR_CT_SPORT) {
        s += rr_csum_diff2(ports[0], v->port);
        ports[0] = v->port;
    }
    rr_csum_apply(&ic->checksum, s); /* the ICMP checksum: only the ports moved it */
    if (ip->saddr == old_addr) {     /* the backend itself answered */
        ip->saddr = v->nat_addr;
        rr_ip4_csum_replace(ip, old_addr, v->nat_addr);
    }
    return 1;
}

static __always_inline int rr_icmp6_reverse(struct __sk_buff *skb)
{
    struct rr_ct_key k = {};
    struct rr_ct6_value *v;
    struct ipv6hdr *ip6, *in;
    struct icmp6hdr *ic;
    struct rr_addr old_addr, new_addr, outer;
    void *data, *end;
    __be16 *ports;
    __u32 s;

    if (rr_linear(skb, RR_ICMP6_INNER + RR_IP6_LEN + 4) < 0)
        return 0;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip6 = data + RR_ETH_LEN;
    ic = data + RR_ICMP6_OFF;
    in = data + RR_ICMP6_INNER;
    ports = data + RR_ICMP6_INNER + RR_IP6_LEN;
    if ((void *)(ports + 2) > end)
        return 0;
    if (ip6->nexthdr != IPPROTO_ICMPV6 || ic->icmp6_type < ICMPV6_DEST_UNREACH ||
        ic->icmp6_type > ICMPV6_TIME_EXCEED)
        return 0;
    if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP)
        return 0;
    __builtin_memcpy(&k.saddr, &in->daddr, 16);
    __builtin_memcpy(&k.daddr, &in->saddr, 16);
    k.sport = ports[1];
    k.dport = ports[0];
    k.proto = in->nexthdr;
    k.family = RR_AF_INET6;
    k.dir = RR_DIR_REPLY;
    v = rr_ct6.lookup(&k);
    if (!v || (v->flags & RR_CT_SNAT) ||
        (__u32)bpf_jiffies64() - v->seen > rr_ct_lifetime(k.proto, v->flags))
        return 0;
    old_addr = k.saddr;
    new_addr = v->nat_addr;
    __builtin_memcpy(&in->daddr, &new_addr, 16);
    s = rr_csum_diff16(&old_addr, &new_addr); /* ICMPv6 sums the inner header too */
    s += rr_csum_diff2(ports[1], v->nat_port);
    ports[1] = v->nat_port;
    if (v->flags & RR_CT_SPORT) {
        s += rr_csum_diff2(ports[0], v->port);
        ports[0] = v->port;
    }
    __builtin_memcpy(&outer, &ip6->saddr, 16);
    if (rr_addr_eq(&outer, &old_addr)) { /* the backend answered: the pseudo-header's
                                          * source moves too */
        __builtin_memcpy(&ip6->saddr, &new_addr, 16);
        s += rr_csum_diff16(&old_addr, &new_addr);
    }
    rr_csum_apply(&ic->icmp6_cksum, s);
    return 1;
}

/* An IPv4 ICMP error about a SNAT'd flow (a remote backend under Cluster policy), come
 * back to the node's address (the uplink's ingress): the embedded packet (node:port ->
 * backend) gets the client's address and port and the service's back, and the outer
 * header goes to the client (from the service address when the backend itself
 * answered). 1 if translated: its source may now be a node address, so the caller
 * routes it out itself, as a SNAT'd reply. */
static __always_inline int rr_icmp4_reverse_snat(struct __sk_buff *skb)
{
    struct rr_ct4_key k = {};
    struct rr_ct4_value *v;
    struct iphdr *ip, *in;
    struct icmphdr *ic;
    void *data, *end;
    __be32 node, backend;
    __be16 *ports;
    __u32 s;

    if (skb->protocol != htons(ETH_P_IP) || rr_linear(skb, RR_ICMP_INNER + 20 + 4) < 0)
        return 0;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip = data + RR_ETH_LEN;
    ic = data + RR_ICMP_OFF;
    in = data + RR_ICMP_INNER;
    ports = data + RR_ICMP_INNER + 20;
    if ((void *)(ports + 2) > end)
        return 0;
    if (ip->ihl != 5 || ip->protocol != IPPROTO_ICMP || (ip->frag_off & htons(0x1fff)))
        return 0;
    if (ic->type != ICMP_DEST_UNREACH && ic->type != ICMP_TIME_EXCEEDED)
        return 0;
    if (in->ihl != 5 || (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP) ||
        ip->daddr != in->saddr) /* to the node address the flow was translated to */
        return 0;
    k.saddr = in->daddr;
    k.daddr = in->saddr;
    k.sport = ports[1];
    k.dport = ports[0];
    k.proto = in->protocol;
    k.dir = RR_DIR_REPLY;
    v = rr_ct.lookup(&k);
    if (!v || !(v->flags & RR_CT_SNAT) ||
        (__u32)bpf_jiffies64() - v->seen > rr_ct_lifetime(k.proto, v->flags))
        return 0;
    node = in->saddr;
    backend = in->daddr;
    in->saddr = v->addr;
    rr_ip4_csum_replace(in, node, v->addr);
    in->daddr = v->nat_addr;
    rr_ip4_csum_replace(in, backend, v->nat_addr);
    s = rr_csum_diff2(ports[0], v->port) + rr_csum_diff2(ports[1], v->nat_port);
    ports[0] = v->port;
    ports[1] = v->nat_port;
    rr_csum_apply(&ic->checksum, s);
    ip->daddr = v->addr;
    rr_ip4_csum_replace(ip, node, v->addr);
    if (ip->saddr == backend) {
        ip->saddr = v->nat_addr;
        rr_ip4_csum_replace(ip, backend, v->nat_addr);
    }
    return 1;
}

/* rr_icmp4_reverse_snat for IPv6: ICMPv6's checksum covers the pseudo-header (the outer
 * addresses) and the embedded header, so every address and port change is summed in. */
static __always_inline int rr_icmp6_reverse_snat(struct __sk_buff *skb)
{
    struct rr_ct_key k = {};
    struct rr_ct6_value *v;
    struct ipv6hdr *ip6, *in;
    struct icmp6hdr *ic;
    struct rr_addr node, backend, client, service, outer;
    void *data, *end;
    __be16 *ports;
    __u32 s;

    if (skb->protocol != htons(ETH_P_IPV6) ||
        rr_linear(skb, RR_ICMP6_INNER + RR_IP6_LEN + 4) < 0)
        return 0;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip6 = data + RR_ETH_LEN;
    ic = data + RR_ICMP6_OFF;
    in = data + RR_ICMP6_INNER;
    ports = data + RR_ICMP6_INNER + RR_IP6_LEN;
    if ((void *)(ports + 2) > end)
        return 0;
    if (ip6->nexthdr != IPPROTO_ICMPV6 || ic->icmp6_type < ICMPV6_DEST_UNREACH ||
        ic->icmp6_type > ICMPV6_TIME_EXCEED)
        return 0;
    if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP)
        return 0;
    __builtin_memcpy(&node, &in->saddr, 16);
    __builtin_memcpy(&backend, &in->daddr, 16);
    __builtin_memcpy(&outer, &ip6->daddr, 16);
    if (!rr_addr_eq(&outer, &node)) /* to the node address the flow was translated to */
        return 0;
    k.saddr = backend;
    k.daddr = node;
    k.sport = ports[1];
    k.dport = ports[0];
    k.proto = in->nexthdr;
    k.family = RR_AF_INET6;
    k.dir = RR_DIR_REPLY;
    v = rr_ct6.lookup(&k);
    if (!v || !(v->flags & RR_CT_SNAT) ||
        (__u32)bpf_jiffies64() - v->seen > rr_ct_lifetime(k.proto, v->flags))
        return 0;
    client = v->addr;
    service = v->nat_addr;
    __builtin_memcpy(&in->saddr, &client, 16);
    __builtin_memcpy(&in->daddr, &service, 16);
    __builtin_memcpy(&ip6->daddr, &client, 16);
    s = rr_csum_diff16(&node, &client);        /* the embedded source */
    s += rr_csum_diff16(&backend, &service);   /* the embedded destination */
    s += rr_csum_diff16(&node, &client);       /* the outer destination */
    s += rr_csum_diff2(ports[0], v->port) + rr_csum_diff2(ports[1], v->nat_port);
    ports[0] = v->port;
    ports[1] = v->nat_port;
    __builtin_memcpy(&outer, &ip6->saddr, 16);
    if (rr_addr_eq(&outer, &backend)) { /* the backend answered */
        __builtin_memcpy(&ip6->saddr, &service, 16);
        s += rr_csum_diff16(&backend, &service);
    }
    rr_csum_apply(&ic->icmp6_cksum, s);
    return 1;
}

/* An ICMP error about a SNAT'd flow, at the uplink's ingress; 1 if translated (the
 * caller routes it out). */
static __always_inline int rr_icmp_reverse_snat(struct __sk_buff *skb)
{
    return rr_icmp4_reverse_snat(skb) || rr_icmp6_reverse_snat(skb);
}

/* Reverse-translate skb when it is an ICMP error about a translated flow; 1 if it was. */
static __always_inline int rr_icmp_reverse(struct __sk_buff *skb)
{
    if (skb->protocol == htons(ETH_P_IP))
        return rr_icmp4_reverse(skb);
    if (skb->protocol == htons(ETH_P_IPV6))
        return rr_icmp6_reverse(skb);
    return 0;
}

#endif
