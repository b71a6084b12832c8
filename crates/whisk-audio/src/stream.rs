//! Audio read a little at a time: decoded, downmixed and resampled as it is asked for, so a
//! long file never sits in memory whole.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use whisk_types::SAMPLE_RATE;

use crate::{AudioError, Result};

/// Sample rates read as audio; outside them a header is taken to be damaged.
const MIN_RATE: u32 = 2_000;
const MAX_RATE: u32 = 768_000;
/// Somewhere 16 kHz mono samples are read from, front to back.
pub trait SampleSource {
    /// Appends up to `max` further samples to `buf` and returns how many; 0 only at the end.
    fn read(&mut self, buf: &mut Vec<f32>, max: usize) -> Result<usize>;
}

/// Samples already in memory; reading takes them off the front.
impl SampleSource for &[f32] {
    fn read(&mut self, buf: &mut Vec<f32>, max: usize) -> Result<usize> {
        let n = max.min(self.len());
        buf.extend_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

/// A file read as 16 kHz mono samples, one packet at a time.
pub struct AudioStream {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Frames the header announces, if it does.
    expected_frames: Option<u64>,
    /// The file's sample rate (0 until the first packet when the header has none).
    rate: u32,
    decoded_frames: u64,
    interleaved: Vec<f32>,
    resampler: Option<StreamResampler>,
    /// 16 kHz samples decoded but not read yet.
    ready: VecDeque<f32>,
    ended: bool,
    damage: Option<Damage>,
}

/// Where a damaged file (a crashed recorder, a cut download) stopped decoding. What came
/// before is read as usual; only a file with nothing decodable is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    pub path: PathBuf,
    /// Seconds decoded before it stopped.
    pub seconds: f64,
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: damaged audio: decoding stopped at {:.2} s ({}); transcribed up to there",
            self.path.display(),
            self.seconds,
            self.reason
        )
    }
}

impl AudioStream {
    /// Opens `path` and checks that it holds a decodable audio track.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| AudioError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_source(path, Box::new(file))
    }

    /// Reads an encoded file held in memory (an upload, a Python `bytes`); `name` stands for
    /// it in errors and warnings, and its extension, if any, hints at the format.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::from_source(name, Box::new(std::io::Cursor::new(bytes)))
    }

    fn from_source(path: &Path, source: Box<dyn MediaSource>) -> Result<Self> {
        let unsupported = |reason: String| AudioError::Unsupported {
            path: path.to_path_buf(),
            reason,
        };
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let mss = MediaSourceStream::new(source, Default::default());
        let format = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| unsupported(e.to_string()))?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| unsupported("no audio track".into()))?;
        let track_id = track.id;
        let expected_frames = track.num_frames;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| unsupported("the track is not audio".into()))?
            .clone();
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| unsupported(e.to_string()))?;
        let rate = params.sample_rate.unwrap_or(0);
        let mut stream = Self {
            path: path.to_path_buf(),
            format,
            decoder,
            track_id,
            expected_frames,
            rate: 0,
            decoded_frames: 0,
            interleaved: Vec::new(),
            resampler: None,
            ready: VecDeque::new(),
            ended: false,
            damage: None,
        };
        if rate != 0 {
            stream.set_rate(rate)?;
        }
        Ok(stream)
    }

    /// The file's length in seconds as its header announces it, if it does.
    pub fn duration_hint(&self) -> Option<f64> {
        match (self.expected_frames, self.rate) {
            (Some(frames), rate) if rate > 0 => Some(frames as f64 / rate as f64),
            _ => None,
        }
    }

    fn set_rate(&mut self, rate: u32) -> Result<()> {
        // A header (damaged, or made to harm) claiming a rate of a few Hz would have a small
        // file resampled into hours of audio.
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(AudioError::Unsupported {
                path: self.path.clone(),
                reason: format!("a sample rate of {rate} Hz, outside {MIN_RATE}-{MAX_RATE} Hz"),
            });
        }
        self.rate = rate;
        self.resampler = if rate as usize == SAMPLE_RATE {
            None
        } else {
            Some(StreamResampler::new(rate)?)
        };
        Ok(())
    }

    /// Where decoding stopped early, once the stream has ended there.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// Ends the stream at a fault: what was decoded stands (with [`Damage`] recorded), unless
    /// nothing was, which is an error.
    fn stop_at_fault(&mut self, reason: String) -> Result<()> {
        if self.decoded_frames == 0 {
            return Err(self.corrupt(reason));
        }
        self.damage = Some(Damage {
            path: self.path.clone(),
            seconds: self.decoded_frames as f64 / self.rate.max(1) as f64,
            reason,
        });
        self.finish()
    }

    fn corrupt(&self, reason: String) -> AudioError {
        AudioError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Decodes packets until some 16 kHz samples are ready or the file ends.
    fn fill(&mut self) -> Result<()> {
        while self.ready.is_empty() && !self.ended {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return self.finish(),
                // Some demuxers report the end of a stream as an unexpected EOF; a truncated
                // file is caught in `finish` by the frame count in the header.
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return self.finish()
                }
                Err(e) => return self.stop_at_fault(e.to_string()),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                // A damaged packet is skipped, as players do; the frame count check still applies.
                Err(SymError::DecodeError(_)) => continue,
                Err(e) => return self.stop_at_fault(e.to_string()),
            };
            let spec = buf.spec();
            let (rate, channels) = (spec.rate(), spec.channels().count().max(1));
            self.interleaved.resize(buf.samples_interleaved(), 0.0);
            buf.copy_to_slice_interleaved(&mut self.interleaved);
            if rate != self.rate {
                if self.decoded_frames > 0 {
                    return Err(self.corrupt(format!(
                        "the sample rate changes from {} to {rate} Hz mid-stream",
                        self.rate
                    )));
                }
                self.set_rate(rate)?;
            }
            let mono = self
                .interleaved
                .chunks_exact(channels)
                .map(|frame| crate::decode::sane(frame.iter().sum::<f32>() / channels as f32));
            let before = self.ready.len();
            match &mut self.resampler {
                Some(r) => r.push(mono, &mut self.ready)?,
                None => self.ready.extend(mono),
            }
            self.decoded_frames += (self.interleaved.len() / channels) as u64;
            debug_assert!(self.ready.len() >= before);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.ended = true;
        if self.decoded_frames == 0 {
            return Err(AudioError::Empty {
                path: self.path.clone(),
            });
        }
        if let Some(expected) = self.expected_frames {
            // Allow one packet of slack: encoders pad the last packet differently.
            if self.damage.is_none() && self.decoded_frames + 8192 < expected {
                self.damage = Some(Damage {
                    path: self.path.clone(),
                    seconds: self.decoded_frames as f64 / self.rate.max(1) as f64,
                    reason: format!(
                        "{} of the {expected} samples the header announces: truncated file?",
                        self.decoded_frames
                    ),
                });
            }
        }
        if let Some(r) = &mut self.resampler {
            r.flush(&mut self.ready)?;
        }
        Ok(())
    }
}

impl SampleSource for AudioStream {
    fn read(&mut self, buf: &mut Vec<f32>, max: usize) -> Result<usize> {
        let mut n = 0;
        while n < max {
            self.fill()?;
            if self.ready.is_empty() {
                break;
            }
            let take = (max - n).min(self.ready.len());
            buf.extend(self.ready.drain(..take));
            n += take;
        }
        Ok(n)
    }
}

/// rubato's FFT resampler fed a chunk at a time. It gives exactly what [`crate::resample`]
/// gives for the whole input (the same chunks through the same filter, the startup delay
/// dropped, `ceil(ratio × input)` samples in all) without holding the input.
struct StreamResampler {
    from: u32,
    inner: Fft<f32>,
    /// Input waiting for a whole chunk.
    pending: Vec<f32>,
    consumed: u64,
    /// Output frames still to drop (the resampler's delay).
    to_trim: usize,
    /// Output not yet released, and how much has been.
    held: VecDeque<f32>,
    released: u64,
    out: Vec<f32>,
}

impl StreamResampler {
    fn new(from: u32) -> Result<Self> {
        let inner = Fft::<f32>::new(from as usize, SAMPLE_RATE, 1024, 1, FixedSync::Input)
            .map_err(|e| AudioError::Resample {
                from,
                reason: e.to_string(),
            })?;
        Ok(Self {
            from,
            to_trim: inner.output_delay(),
            out: vec![0.0; inner.output_frames_max()],
            inner,
            pending: Vec::new(),
            consumed: 0,
            held: VecDeque::new(),
            released: 0,
        })
    }

    fn ratio(&self) -> f64 {
        SAMPLE_RATE as f64 / self.from as f64
    }

    fn push(&mut self, input: impl Iterator<Item = f32>, ready: &mut VecDeque<f32>) -> Result<()> {
        self.pending.extend(input);
        let chunk = self.inner.input_frames_next();
        // As in `process_all`, the last chunk (even a whole one) is left for `flush`.
        let mut start = 0;
        while self.pending.len() - start > chunk {
            self.process(start, None)?;
            start += chunk;
        }
        self.consumed += start as u64;
        self.pending.drain(..start);
        // Never hand out more than the input so far is sure to give.
        let limit = (self.ratio() * self.consumed as f64).floor() as u64;
        self.release(limit, ready);
        Ok(())
    }

    fn flush(&mut self, ready: &mut VecDeque<f32>) -> Result<()> {
        let rest = self.pending.len();
        let total = self.consumed + rest as u64;
        let expected = (self.ratio() * total as f64).ceil() as u64;
        if rest > 0 {
            self.process(0, Some(rest))?;
        }
        self.pending.clear();
        self.consumed = total;
        // Pump zeros until the delayed tail is out.
        while self.released + (self.held.len() as u64) < expected {
            self.process(0, Some(0))?;
        }
        self.release(expected, ready);
        self.held.clear();
        Ok(())
    }

    /// Runs one chunk from `pending[start..]` (`partial`: fewer valid frames than a chunk).
    fn process(&mut self, start: usize, partial: Option<usize>) -> Result<()> {
        let err = |e: String| AudioError::Resample {
            from: self.from,
            reason: e,
        };
        let input = InterleavedSlice::new(&self.pending[..], 1, self.pending.len())
            .map_err(|e| err(e.to_string()))?;
        let frames = self.out.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out[..], 1, frames)
            .map_err(|e| err(e.to_string()))?;
        let indexing = Indexing {
            input_offset: start,
            output_offset: 0,
            active_channels_mask: None,
            partial_len: partial,
        };
        let (_, produced) = self
            .inner
            .process_into_buffer(&input, &mut output, Some(&indexing))
            .map_err(|e| err(e.to_string()))?;
        let dropped = self.to_trim.min(produced);
        self.to_trim -= dropped;
        self.held.extend(&self.out[dropped..produced]);
        Ok(())
    }

    fn release(&mut self, limit: u64, ready: &mut VecDeque<f32>) {
        let n = (limit.saturating_sub(self.released) as usize).min(self.held.len());
        ready.extend(self.held.drain(..n));
        self.released += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chirp with some noise: every frequency band matters to the filter.
    fn signal(len: usize, rate: u32) -> Vec<f32> {
        let mut x = 12345u32;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let t = i as f32 / rate as f32;
                0.5 * (2.0 * std::f32::consts::PI * (200.0 + 3000.0 * t) * t).sin()
                    + 0.1 * ((x >> 8) as f32 / (1 << 24) as f32 - 0.5)
            })
            .collect()
    }

    #[test]
    fn streamed_resampling_equals_resampling_the_whole() {
        for (rate, len) in [
            (44_100, 1),
            (44_100, 1023),
            (44_100, 1024),
            (44_100, 1025),
            (44_100, 2048),
            (44_100, 100_000),
            (8_000, 12_345),
            (48_000, 77_777),
        ] {
            let input = signal(len, rate);
            let whole = crate::resample(&input, rate).unwrap();
            let mut r = StreamResampler::new(rate).unwrap();
            let mut ready = VecDeque::new();
            // Pieces of awkward sizes, as packets come.
            let mut rest = &input[..];
            let mut k = 0;
            while !rest.is_empty() {
                let n = [1, 700, 1024, 3000, 5][k % 5].min(rest.len());
                r.push(rest[..n].iter().copied(), &mut ready).unwrap();
                rest = &rest[n..];
                k += 1;
                let sure = (r.ratio() * (len - rest.len()) as f64).ceil() as usize;
                assert!(ready.len() <= sure, "{rate} Hz: ran ahead of the input");
            }
            r.flush(&mut ready).unwrap();
            let streamed: Vec<f32> = ready.into_iter().collect();
            assert_eq!(streamed.len(), whole.len(), "{rate} Hz, {len} samples");
            assert!(
                streamed.iter().zip(&whole).all(|(a, b)| a == b),
                "{rate} Hz, {len} samples: streamed samples differ"
            );
        }
    }

    #[test]
    fn slices_read_front_to_back() {
        let data = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut source: &[f32] = &data;
        let mut buf = Vec::new();
        assert_eq!(source.read(&mut buf, 2).unwrap(), 2);
        assert_eq!(source.read(&mut buf, 10).unwrap(), 3);
        assert_eq!(source.read(&mut buf, 10).unwrap(), 0);
        assert_eq!(buf, data);
    }
}
