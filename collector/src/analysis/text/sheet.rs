//! The text of workbooks through calamine: XLSX and the legacy XLS
//! (BIFF8, Excel 97–2003). Each sheet's name, then its cells row by row
//! (a tab between cells, a line per row): words and numbers both, as an
//! investigator may search for an amount.

use std::io::Cursor;

use calamine::{Data, Reader, Xls, Xlsx};

use super::sink::{ReadResult, Sink, unreadable};

pub(super) fn xlsx(data: &[u8], out: &mut Sink) -> ReadResult {
    let mut book = Xlsx::new(Cursor::new(data))
        .map_err(|e| unreadable(format!("not a readable XLSX workbook ({e})")))?;
    for name in book.sheet_names() {
        if !out.push(&name) || !out.line_break() {
            return Ok(());
        }
        // The cells one by one, as stored: a sheet that claims a huge
        // dimension costs nothing for its empty cells (a whole range would
        // be allocated for them).
        let mut cells = match book.worksheet_cells_reader(&name) {
            Ok(c) => c,
            // A chart sheet or a damaged sheet: the others are still read.
            Err(_) => continue,
        };
        let mut row = None;
        while let Ok(Some(cell)) = cells.next_cell() {
            let value = Data::from(cell.get_value().clone());
            if !push_cell(out, &mut row, cell.get_position().0, &value) {
                return Ok(());
            }
        }
        out.line_break();
    }
    Ok(())
}

pub(super) fn xls(data: &[u8], out: &mut Sink) -> ReadResult {
    let mut book = Xls::new(Cursor::new(data))
        .map_err(|e| unreadable(format!("not a readable XLS workbook ({e})")))?;
    for name in book.sheet_names() {
        if !out.push(&name) || !out.line_break() {
            return Ok(());
        }
        let Ok(range) = book.worksheet_range(&name) else {
            continue;
        };
        let mut row = None;
        for (r, _, value) in range.used_cells() {
            if !push_cell(out, &mut row, r as u32, value) {
                return Ok(());
            }
        }
        out.line_break();
    }
    Ok(())
}

/// One cell's text: a tab after the previous cell of its row, a line
/// break before a new row. False once the text is full.
fn push_cell(out: &mut Sink, row: &mut Option<u32>, r: u32, value: &Data) -> bool {
    if matches!(value, Data::Empty) {
        return true;
    }
    let sep = match *row {
        Some(prev) if prev == r => out.push("\t"),
        Some(_) => out.line_break(),
        None => true,
    };
    *row = Some(r);
    sep && out.push(&value.to_string())
}
