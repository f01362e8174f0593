//! Rows in PostgreSQL's binary `COPY` format, for loading rebuilt read tables in bulk.
//!
//! Each field is encoded by sqlx's own `Encode` implementation — the binary wire format, which
//! is what `COPY … (FORMAT binary)` expects per field — so no type's encoding is written here.

use sqlx::encode::{Encode, IsNull};
use sqlx::postgres::{PgArgumentBuffer, PgConnection};
use sqlx::Postgres;

/// The file header: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Bytes buffered before they are sent to the server.
const CHUNK_BYTES: usize = 1 << 20;

/// A `COPY … FROM STDIN (FORMAT binary)` in progress on one connection.
pub struct BinaryCopy<'c> {
    copy: sqlx::postgres::PgCopyIn<&'c mut PgConnection>,
    buf: Vec<u8>,
    field: PgArgumentBuffer,
    pub rows: u64,
}

impl<'c> BinaryCopy<'c> {
    /// Starts copying into `table` (`columns` in the order the rows give them).
    pub async fn start(
        conn: &'c mut PgConnection,
        table: &str,
        columns: &str,
    ) -> Result<BinaryCopy<'c>, sqlx::Error> {
        let copy = conn
            .copy_in_raw(&format!(
                "COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary)"
            ))
            .await?;
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
        buf.extend_from_slice(HEADER);
        Ok(BinaryCopy {
            copy,
            buf,
            field: PgArgumentBuffer::default(),
            rows: 0,
        })
    }

    /// Begins a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
    }

    /// Appends one field of the current row.
    pub fn field<'q, T: Encode<'q, Postgres>>(&mut self, value: &T) -> Result<(), sqlx::Error> {
        self.field.clear();
        match value
            .encode_by_ref(&mut self.field)
            .map_err(sqlx::Error::Encode)?
        {
            IsNull::Yes => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            IsNull::No => {
                let len = i32::try_from(self.field.len())
                    .map_err(|_| sqlx::Error::Protocol("a COPY field over 2 GiB".into()))?;
                self.buf.extend_from_slice(&len.to_be_bytes());
                self.buf.extend_from_slice(&self.field);
            }
        }
        Ok(())
    }

    /// Sends what is buffered once it is large enough.
    pub async fn flush_if_full(&mut self) -> Result<(), sqlx::Error> {
        if self.buf.len() >= CHUNK_BYTES {
            self.copy.send(std::mem::take(&mut self.buf)).await?;
            self.buf.reserve(CHUNK_BYTES + 4096);
        }
        Ok(())
    }

    /// Sends the rest and the trailer; returns the rows the server took.
    pub async fn finish(mut self) -> Result<u64, sqlx::Error> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.copy.send(std::mem::take(&mut self.buf)).await?;
        self.copy.finish().await
    }
}
