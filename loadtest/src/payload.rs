//! Realistic payloads: a Chrome audio+video offer (~4.5 KB) and answer
//! (~3.6 KB), and host candidates, each made unique per session so a
//! misrouted message is detected.

use switchboard_proto::{Candidate, Sdp};

/// An offer shaped like Chrome's for one audio and one video track.
pub fn offer(session: u64) -> Sdp {
    sdp(session, "offer", 4500)
}

/// An answer shaped like Chrome's to that offer.
pub fn answer(session: u64) -> Sdp {
    sdp(session, "answer", 3600)
}

fn sdp(session: u64, kind: &str, target: usize) -> Sdp {
    let mut text = format!(
        "v=0\r\no=- {session} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=extmap-allow-mixed\r\na=msid-semantic: WMS lt-{session}\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:lt{session:x}\r\na=ice-pwd:loadtestpasswordloadtestpw\r\n\
         a=ice-options:trickle\r\na=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:2C:EC:0A:8D:F2:B4:4F:1B:B6:7C:31:5D\r\n\
         a=setup:{}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
         a=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
        if kind == "offer" { "actpass" } else { "active" }
    );
    let lines = [
        "a=rtpmap:63 red/48000/2\r\n",
        "a=fmtp:63 111/111\r\n",
        "a=rtpmap:96 VP8/90000\r\n",
        "a=rtcp-fb:96 goog-remb\r\n",
        "a=rtcp-fb:96 transport-cc\r\n",
        "a=rtcp-fb:96 ccm fir\r\n",
        "a=rtcp-fb:96 nack\r\n",
        "a=rtcp-fb:96 nack pli\r\n",
        "a=rtpmap:97 rtx/90000\r\n",
        "a=fmtp:97 apt=96\r\n",
        "a=rtpmap:98 VP9/90000\r\n",
        "a=fmtp:98 profile-id=0\r\n",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:toffset\r\n",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n",
        "a=extmap:3 urn:3gpp:video-orientation\r\n",
        "a=rtpmap:45 AV1/90000\r\n",
        "a=fmtp:45 level-idx=5;profile=0;tier=0\r\n",
        "a=rtpmap:100 H264/90000\r\n",
        "a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n",
    ];
    let mut i = 0;
    while text.len() < target {
        text.push_str(lines[i % lines.len()]);
        i += 1;
    }
    text.push_str(&format!("a=ssrc:{session} cname:lt{session}\r\n"));
    Sdp::parse(&text).expect("a generated SDP is valid")
}

/// The `n`th host candidate of `who` in `session`.
pub fn candidate(session: u64, who: &str, n: u32) -> Candidate {
    Candidate {
        candidate: format!(
            "candidate:{n}{session} 1 udp 2122260223 127.0.0.1 {} typ host generation 0 ufrag {who}{session:x} network-id 1",
            40000 + n
        ),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some(format!("{who}{session:x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_realistic_sizes_and_are_unique() {
        let o = offer(7);
        assert!(
            (4400..4700).contains(&o.as_str().len()),
            "{}",
            o.as_str().len()
        );
        assert!((3500..3800).contains(&answer(7).as_str().len()));
        assert_ne!(offer(7), offer(8));
        assert_ne!(candidate(1, "c", 0), candidate(2, "c", 0));
    }
}
