//! The classic BPF program of the inspection socket, assembled here by
//! hand (with labels, resolved to the forward jump offsets cBPF wants).
//!
//! The socket is `AF_PACKET`/`SOCK_DGRAM`, so every packet the program
//! sees starts at its network header (IPv4 or IPv6, whatever the link).
//! The program's return value is how many bytes user space gets (0: none).
//!
//! What passes, and how much of it:
//! - TCP segments whose payload starts "\x13Bit" (a BitTorrent handshake)
//!   or "GET /" (an HTTP request: a tracker announce is one): headers +
//!   [`SNAP_PAYLOAD`] bytes of payload;
//! - UDP from port 53 (DNS answers): headers + [`SNAP_DNS`];
//! - UDP whose payload starts 'd' (bencode: DHT KRPC) or is a UDP tracker
//!   `connect` (BEP 15): headers + [`SNAP_PAYLOAD`]; uTP control packets
//!   (first byte 0x11 FIN, 0x21 STATE, 0x31 RESET, 0x41 SYN): headers +
//!   [`SNAP_UTP`];
//! - every other UDP datagram: its IP and UDP headers only, so UDP flows
//!   get packet and byte counts (sock_diag has none for UDP);
//! - nothing else: TCP segments without those first bytes, fragments after
//!   the first, IPv6 with extension headers, non-IP.
//! - The copy of an outgoing packet on `lo` is dropped: loopback traffic
//!   comes back in as an incoming packet, which is kept.
//!
//! Why a stateless filter stands for "the first packets of each flow":
//! the patterns only occur where a conversation starts — a BitTorrent
//! connection opens with the handshake, an HTTP request with its request
//! line, and on UDP every KRPC / DNS / tracker / uTP control datagram is a
//! message of its own. Keeping per-flow state in the kernel would need
//! eBPF maps (not available to us: see the issue); the cost of not having
//! it is that the middle of a plain-HTTP keep-alive connection passes each
//! further request line too, and that every UDP datagram costs a
//! header-sized copy and a `recvmsg` in the agent.
//!
//! What it costs: the program runs on every packet of the host (about 25
//! instructions on the longest path, JIT-compiled by the kernel); what it
//! passes is copied to the socket's receive queue and read by one thread.

use std::collections::HashMap;
use std::io;

/// Payload bytes kept of a recognisable TCP segment or UDP datagram: a
/// handshake is 68, an announce request line 200–300.
pub const SNAP_PAYLOAD: u32 = 320;
/// Payload bytes kept of a DNS answer (a classic UDP DNS message is at
/// most 512).
pub const SNAP_DNS: u32 = 512;
/// Payload bytes kept of a uTP control packet (header and extensions).
pub const SNAP_UTP: u32 = 64;

/// One cBPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Instruction classes, sizes, modes and operations (linux/bpf_common.h).
pub const LD: u16 = 0x00;
pub const LDX: u16 = 0x01;
pub const ST: u16 = 0x02;
pub const ALU: u16 = 0x04;
pub const JMP: u16 = 0x05;
pub const RET: u16 = 0x06;
pub const MISC: u16 = 0x07;
pub const W: u16 = 0x00;
pub const H: u16 = 0x08;
pub const B: u16 = 0x10;
pub const IMM: u16 = 0x00;
pub const ABS: u16 = 0x20;
pub const IND: u16 = 0x40;
pub const MEM: u16 = 0x60;
pub const MSH: u16 = 0xa0;
pub const ADD: u16 = 0x00;
pub const AND: u16 = 0x50;
pub const RSH: u16 = 0x70;
pub const JA: u16 = 0x00;
pub const JEQ: u16 = 0x10;
pub const JGT: u16 = 0x20;
pub const JSET: u16 = 0x40;
pub const K: u16 = 0x00;
pub const X: u16 = 0x08;
pub const RET_A: u16 = 0x10;
pub const TAX: u16 = 0x00;
pub const TXA: u16 = 0x80;

/// Ancillary loads (linux/filter.h): `ld [SKF_AD_OFF + n]` reads skb
/// metadata instead of packet bytes.
pub const AD_OFF: u32 = 0xffff_f000; // -0x1000
pub const AD_PROTOCOL: u32 = AD_OFF; // skb->protocol, host order
pub const AD_PKTTYPE: u32 = AD_OFF + 4;
pub const AD_IFINDEX: u32 = AD_OFF + 8;

/// Packet types (linux/if_packet.h).
pub const PACKET_OTHERHOST: u32 = 3;
pub const PACKET_OUTGOING: u32 = 4;
/// The loopback device's index in every network namespace
/// (LOOPBACK_IFINDEX).
pub const LOOPBACK_IFINDEX: u32 = 1;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

/// A jump target: the next instruction or a label.
#[derive(Clone, Copy)]
enum To {
    Next,
    L(&'static str),
}
use To::{L, Next};

#[derive(Default)]
struct Asm {
    code: Vec<(u16, To, To, u32)>,
    labels: HashMap<&'static str, usize>,
}

impl Asm {
    fn label(&mut self, name: &'static str) {
        self.labels.insert(name, self.code.len());
    }
    fn op(&mut self, code: u16, k: u32) {
        self.code.push((code, Next, Next, k));
    }
    fn jmp(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.code.push((code, jt, jf, k));
    }
    fn finish(self) -> io::Result<Vec<Insn>> {
        let resolve = |at: usize, to: To| -> io::Result<u32> {
            let target = match to {
                Next => return Ok(0),
                L(name) => *self
                    .labels
                    .get(name)
                    .ok_or_else(|| bad(format!("no label {name}")))?,
            };
            target
                .checked_sub(at + 1)
                .map(|o| o as u32)
                .ok_or_else(|| bad(format!("backward jump to {to}", to = label_name(to))))
        };
        let mut out = Vec::with_capacity(self.code.len());
        for (i, &(code, jt, jf, k)) in self.code.iter().enumerate() {
            if code & 0x07 == JMP && code & 0xf0 == JA {
                // `ja` jumps by k.
                let k = resolve(i, jt)?;
                out.push(Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                });
                continue;
            }
            let short = |o: u32| u8::try_from(o).map_err(|_| bad("jump beyond 255".into()));
            out.push(Insn {
                code,
                jt: short(resolve(i, jt)?)?,
                jf: short(resolve(i, jf)?)?,
                k,
            });
        }
        Ok(out)
    }
}

fn label_name(t: To) -> &'static str {
    match t {
        Next => "next",
        L(n) => n,
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("inspection filter: {msg}"),
    )
}

/// The inspection program. Scratch memory: M[0] the IP packet's length
/// (network header included), M[1] the transport protocol. X holds the
/// transport header's offset, then (TCP) the payload's. (The kernel refuses
/// a program that reads a scratch slot not stored on every path reaching
/// the read, as its linear check sees paths: `check_load_and_stores`,
/// mirrored by the tests.)
pub fn program() -> io::Result<Vec<Insn>> {
    let mut a = Asm::default();
    // Direction: drop lo's outgoing copy and other hosts' packets.
    a.op(LD | W | ABS, AD_PKTTYPE);
    a.jmp(JMP | JEQ | K, PACKET_OUTGOING, Next, L("incoming"));
    a.op(LD | W | ABS, AD_IFINDEX);
    a.jmp(JMP | JEQ | K, LOOPBACK_IFINDEX, L("drop"), L("l3"));
    a.label("incoming");
    a.jmp(JMP | JEQ | K, PACKET_OTHERHOST, L("drop"), L("l3"));
    // Network layer.
    a.label("l3");
    a.op(LD | W | ABS, AD_PROTOCOL);
    a.jmp(JMP | JEQ | K, ETH_P_IP, L("v4"), Next);
    a.jmp(JMP | JEQ | K, ETH_P_IPV6, L("v6"), L("drop"));
    a.label("v4");
    a.op(LD | H | ABS, 6); // flags + fragment offset
    a.jmp(JMP | JSET | K, 0x1fff, L("drop"), Next); // a later fragment: no ports
    a.op(LD | H | ABS, 2); // total length
    a.op(ST, 0);
    a.op(LD | B | ABS, 9); // protocol
    a.op(ST, 1);
    a.op(LDX | B | MSH, 0); // X = 4 * (IHL)
    a.jmp(JMP | JA, 0, L("l4"), Next);
    a.label("v6");
    a.op(LD | H | ABS, 4); // payload length
    a.op(ALU | ADD | K, 40);
    a.op(ST, 0);
    a.op(LD | B | ABS, 6); // next header (extension headers are not followed)
    a.op(ST, 1);
    a.op(LDX | W | IMM, 40);
    // Transport layer.
    a.label("l4");
    a.op(LD | MEM, 1);
    a.jmp(JMP | JEQ | K, IPPROTO_TCP, L("tcp"), Next);
    a.jmp(JMP | JEQ | K, IPPROTO_UDP, L("udp"), L("drop"));
    a.label("tcp");
    a.op(LD | B | IND, 12); // data offset in the high nibble
    a.op(ALU | RSH | K, 2);
    a.op(ALU | AND | K, 0x3c); // (doff >> 4) * 4
    a.op(ALU | ADD | X, 0);
    a.op(MISC | TAX, 0); // X = payload offset
    a.op(LD | MEM, 0);
    a.jmp(JMP | JGT | X, 0, Next, L("drop")); // no payload
    a.op(LD | W | IND, 0); // the payload's first 4 bytes
    a.jmp(
        JMP | JEQ | K,
        u32::from_be_bytes(*b"\x13Bit"),
        L("snap"),
        Next,
    );
    a.jmp(JMP | JEQ | K, u32::from_be_bytes(*b"GET "), Next, L("drop"));
    a.op(LD | B | IND, 4);
    a.jmp(JMP | JEQ | K, u32::from(b'/'), L("snap"), L("drop"));
    a.label("udp");
    a.op(LD | H | IND, 0); // source port
    a.jmp(JMP | JEQ | K, 53, L("dns"), Next);
    a.op(LD | H | IND, 4); // UDP length, header included
    a.jmp(JMP | JGT | K, 8, Next, L("header"));
    a.op(LD | B | IND, 8); // the payload's first byte
    a.jmp(JMP | JEQ | K, u32::from(b'd'), L("udp_snap"), Next);
    a.jmp(JMP | JEQ | K, 0, L("connect"), Next);
    a.jmp(JMP | JGT | K, 0x41, L("header"), Next);
    a.jmp(JMP | JEQ | K, 0x01, L("header"), Next); // uTP data: counted only
    a.op(ALU | AND | K, 0x0f);
    a.jmp(JMP | JEQ | K, 1, L("utp"), L("header"));
    a.label("connect");
    a.op(LD | H | IND, 4);
    a.jmp(JMP | JEQ | K, 8 + 16, Next, L("header"));
    a.op(LD | W | IND, 8);
    a.jmp(JMP | JEQ | K, 0x0000_0417, Next, L("header"));
    a.op(LD | W | IND, 12);
    a.jmp(JMP | JEQ | K, 0x2710_1980, L("udp_snap"), L("header"));
    a.label("header");
    ret_x_plus(&mut a, 8);
    a.label("utp");
    ret_x_plus(&mut a, 8 + SNAP_UTP);
    a.label("udp_snap");
    ret_x_plus(&mut a, 8 + SNAP_PAYLOAD);
    a.label("dns");
    ret_x_plus(&mut a, 8 + SNAP_DNS);
    a.label("snap");
    ret_x_plus(&mut a, SNAP_PAYLOAD); // X: the TCP payload's offset
    a.label("drop");
    a.op(RET | K, 0);
    a.finish()
}

/// `return X + n` (X: the UDP header's offset, or the TCP payload's).
fn ret_x_plus(a: &mut Asm, n: u32) {
    a.op(MISC | TXA, 0);
    a.op(ALU | ADD | K, n);
    a.op(RET | RET_A, 0);
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
