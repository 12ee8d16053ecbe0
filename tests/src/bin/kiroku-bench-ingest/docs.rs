//! Real documents for the ingest benchmark's `mail1m-docs` kind: a PDF and
//! an XLSX, different in every mail (the collector keys its analysis by
//! content hash, so repeated files would measure the cache, not the work),
//! made here rather than by an office suite so the benchmark needs no
//! Python packages. Each has extractable text (about `words` words) and an
//! embedded incompressible image-like stream, as real office documents are
//! mostly pictures by size.

use std::io::Write;

use rand::Rng;
use rand::rngs::StdRng;

/// A one-page PDF 1.4: a Helvetica text content stream (deflated) of
/// `words` words of `text`, plus an unreferenced image XObject of
/// `padding` random bytes; the xref table is exact, so strict readers
/// (lopdf) take it.
pub fn pdf(rng: &mut StdRng, words: &str, padding: usize) -> Vec<u8> {
    let mut content = String::from("BT /F1 10 Tf 14 TL 40 800 Td\n");
    for line in words.split("\r\n") {
        let esc = line
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!("({esc}) Tj T*\n"));
    }
    content.push_str("ET\n");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(content.as_bytes());
    let content = z.finish().unwrap_or_default();
    let mut image = vec![0u8; padding];
    rng.fill(&mut image[..]);

    let mut out: Vec<u8> = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    let mut obj = |out: &mut Vec<u8>, body: &[u8]| {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", offsets.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    };
    obj(&mut out, b"<< /Type /Catalog /Pages 2 0 R >>");
    obj(&mut out, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
    obj(
        &mut out,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
    );
    let mut stream = format!(
        "<< /Length {} /Filter /FlateDecode >>\nstream\n",
        content.len()
    )
    .into_bytes();
    stream.extend_from_slice(&content);
    stream.extend_from_slice(b"\nendstream");
    obj(&mut out, &stream);
    obj(
        &mut out,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    );
    let mut img = format!(
        "<< /Type /XObject /Subtype /Image /Width {} /Height 1 /ColorSpace /DeviceGray \
/BitsPerComponent 8 /Length {} >>\nstream\n",
        image.len(),
        image.len()
    )
    .into_bytes();
    img.extend_from_slice(&image);
    img.extend_from_slice(b"\nendstream");
    obj(&mut out, &img);
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", offsets.len() + 1).as_bytes(),
    );
    for o in &offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            offsets.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// An XLSX workbook: one sheet of `rows` rows (a label, inline-string
/// words, a number), and a stored random `xl/media/image1.png` of
/// `padding` bytes.
pub fn xlsx(rng: &mut StdRng, words: &[String], padding: usize) -> zip::result::ZipResult<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = SimpleFileOptions::default();
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let files: [(&str, String); 4] = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Default Extension="png" ContentType="image/png"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.into(),
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.into(),
        ),
        (
            "xl/workbook.xml",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Forecast" sheetId="1" r:id="rId1"/></sheets></workbook>"#.into(),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.into(),
        ),
    ];
    for (name, body) in files {
        w.start_file(name, deflated)?;
        w.write_all(body.as_bytes())?;
    }
    let mut sheet = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    for (i, line) in words.iter().enumerate() {
        let r = i + 1;
        let n: u32 = rng.random_range(1..1_000_000);
        sheet.push_str(&format!(
            r#"<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>item {r}</t></is></c><c r="B{r}" t="inlineStr"><is><t>{line}</t></is></c><c r="C{r}"><v>{n}</v></c></row>"#
        ));
    }
    sheet.push_str("</sheetData></worksheet>");
    w.start_file("xl/worksheets/sheet1.xml", deflated)?;
    w.write_all(sheet.as_bytes())?;
    let mut image = vec![0u8; padding];
    rng.fill(&mut image[..]);
    w.start_file("xl/media/image1.png", stored)?;
    w.write_all(&image)?;
    Ok(w.finish()?.into_inner())
}
