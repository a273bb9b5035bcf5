//! The copy-paste code (`pixCopiaECola`): an EMV merchant-presented QR payload ("BR Code")
//! ending in a CRC16-CCITT checksum.

/// Domain of the dynamic-QR location inside the code (the simulator's own, never resolved).
const LOCATION_HOST: &str = "pix.sim.example/qr/v2";

/// One EMV field: id, two-digit length, value.
fn field(id: &str, value: &str) -> String {
    format!("{id}{:02}{value}", value.len())
}

/// The code of a dynamic charge `txid` for `amount` (a BRL decimal string).
pub(super) fn copy_paste(txid: &str, amount: &str) -> String {
    let account = field("00", "br.gov.bcb.pix") + &field("25", &format!("{LOCATION_HOST}/{txid}"));
    let mut code = String::new();
    code += &field("00", "01"); // payload format indicator
    code += &field("01", "12"); // point of initiation: dynamic, single use
    code += &field("26", &account);
    code += &field("52", "0000"); // merchant category code
    code += &field("53", "986"); // BRL
    code += &field("54", amount);
    code += &field("58", "BR");
    code += &field("59", "PAYPROXY SIM");
    code += &field("60", "SAO PAULO");
    code += &field("62", &field("05", "***"));
    code += "6304";
    let crc = crc16(code.as_bytes());
    format!("{code}{crc:04X}")
}

/// CRC16-CCITT (polynomial 0x1021, initial value 0xFFFF, no reflection).
pub(super) fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0xFFFF_u16, |crc, &b| {
        (0..8).fold(crc ^ (u16::from(b) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_central_bank_example() {
        // The static BR Code example of the Central Bank's manual, without its last 4 chars.
        let payload = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***6304";
        assert_eq!(format!("{:04X}", crc16(payload.as_bytes())), "1D3D");
    }

    #[test]
    fn code_shape() {
        let code = copy_paste("73e18494c0807ea0b1a2d9041604ccef", "10.00");
        assert!(code.starts_with("000201010212"));
        assert!(code.contains("br.gov.bcb.pix"));
        assert!(code.contains("540510.00"));
        let (body, crc) = code.split_at(code.len() - 4);
        assert_eq!(format!("{:04X}", crc16(body.as_bytes())), crc);
    }
}
