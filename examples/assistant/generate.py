"""Generate the bundled assistant example: labelled utterances and the iTAG export they would have come from.

The example has to behave like real labelling output, not a toy: two languages, varied phrasing, parameter values the
model can copy from the text, some multi-intent and multi-turn requests, machine pre-labels that reviewers corrected,
abandoned items and a handful of broken lines that the converter must reject. Everything is drawn from hand-written
templates and slot values with a fixed seed, so `python examples/assistant/generate.py` rewrites the committed files
byte for byte.

Template syntax: `[a|b|]` picks one alternative (an empty one is allowed), `{slot}` takes a value from SLOTS[lang].
Every expansion of every template is enumerated and sampled without replacement, so texts never repeat.

Outputs (next to this file unless --out is given):
  records.jsonl   the records contract: id, text, output, intent, params, calls, lang, source_line (null here)
  manifest.jsonl  the same items as a PAI iTAG export manifest (format of seed 002), plus abandoned and broken lines
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from intentops.catalog import Catalog, load_catalog
from intentops.grammar import Call, parse_calls, render_calls
from intentops.io import atomic_write_text, write_jsonl

HERE = Path(__file__).resolve().parent
SEED = 20250723
SINGLE_PER_LANG = 36  # single-intent utterances per intent and language
MULTI_INTENT_RECORDS = 250  # about 12% of the records
MULTI_TURN_PER_LANG = 3  # per intent that has multi-turn templates
WRONG_PRELABEL_SHARE = 0.05  # machine pre-label wrong, reviewer corrected it
FULL_WIDTH_SHARE = 0.02  # reviewer typed the call with full-width punctuation
TASK_ID = "1952468130274643968"
MARK_TITLE = "基础模版"
CST = timezone(timedelta(hours=8))
START = datetime(2025, 7, 23, 9, 30, tzinfo=CST)

# fmt: off
SLOTS: dict[str, dict[str, list[str]]] = {
    "zh": {
        "artist": ["周杰伦", "陈奕迅", "王菲", "林俊杰", "邓紫棋", "五月天", "孙燕姿", "李荣浩", "薛之谦", "张学友",
                   "毛不易", "蔡依林", "Taylor Swift"],
        "song": ["十年", "晴天", "七里香", "红豆", "后来", "平凡之路", "稻香", "小幸运", "光年之外", "演员", "夜曲",
                 "青花瓷", "突然好想你", "成都"],
        "city": ["杭州", "北京", "上海", "广州", "深圳", "成都", "西安", "三亚", "厦门", "哈尔滨", "重庆", "南京",
                 "武汉", "昆明", "东京", "巴黎"],
        "time": ["早上7点", "7点半", "明天早上6点", "6:30", "下午3点", "晚上10点", "明早8点", "八点一刻", "中午12点",
                 "5点40", "凌晨4点半", "早上六点五十"],
        "duration": ["10分钟", "5分钟", "半小时", "一个小时", "30秒", "20分钟", "三分钟", "45分钟", "一个半小时",
                     "15分钟"],
        "destination": ["西湖", "首都机场", "虹桥火车站", "公司", "人民广场", "中关村", "南京路步行街", "故宫",
                        "浦东机场", "天安门", "三里屯", "外滩", "春熙路", "市第一人民医院"],
        "place_type": ["加油站", "停车场", "药店", "咖啡店", "火锅店", "银行", "便利店", "充电桩", "超市", "洗手间",
                       "地铁站", "修车店"],
        "name": ["妈妈", "爸爸", "老王", "张伟", "李娜", "王经理", "小陈", "刘老师", "姐姐", "老婆", "陈静", "赵磊"],
        "content": ["我晚点到", "今晚不回家吃饭了", "会议改到下午三点", "记得带钥匙", "我已经到楼下了", "生日快乐",
                    "路上堵车，大概晚半小时", "明天见", "帮我取一下快递", "收到请回复", "我到机场了", "晚饭做好了"],
        "room": ["客厅", "卧室", "厨房", "书房", "卫生间", "儿童房", "阳台", "餐厅", "主卧", "次卧"],
        "degrees": [str(d) for d in range(18, 31)],
        "title": ["开会", "看牙医", "健身", "和客户吃饭", "项目评审", "接孩子", "交房租", "家长会", "面试",
                  "给车做保养"],
        "when": ["明天下午3点", "周五上午10点", "今晚8点", "下周一早上9点", "后天中午12点", "3月8号下午2点",
                 "周三晚上7点", "明早9点半"],
        "date": ["今天", "明天", "后天", "周五", "下周一", "这个周末", "3月8号", "星期三", "下周二", "月底"],
        "order_id": [],  # filled by _order_ids
        "product": ["蓝牙耳机", "电饭煲", "运动鞋", "羽绒服", "机械键盘", "保温杯", "台灯", "手机壳", "行李箱",
                    "空气炸锅", "扫地机器人", "连衣裙"],
    },
    "en": {
        "artist": ["Taylor Swift", "Ed Sheeran", "Adele", "The Beatles", "Coldplay", "Bruno Mars", "Billie Eilish",
                   "Queen", "Beyonce", "Drake", "Norah Jones", "Imagine Dragons", "Eminem"],
        "song": ["Yesterday", "Hotel California", "Shape of You", "Bohemian Rhapsody", "Hello", "Rolling in the Deep",
                 "Let It Be", "Perfect", "Someone Like You", "Viva la Vida", "Bad Guy", "Hey Jude", "Imagine",
                 "Wonderwall"],
        "city": ["London", "Paris", "New York", "Tokyo", "Seattle", "Sydney", "Berlin", "Chicago", "Beijing",
                 "Shanghai", "Toronto", "San Francisco", "Singapore", "Boston", "Dubai", "Rome"],
        "time": ["7 am", "6:30 am", "6:45", "8 o'clock", "noon", "10 pm", "5:45 am", "7:15", "9 am", "half past six",
                 "4:30 pm", "midnight"],
        "duration": ["10 minutes", "5 minutes", "half an hour", "an hour", "30 seconds", "20 minutes",
                     "three minutes", "45 minutes", "90 seconds", "15 minutes"],
        "destination": ["the airport", "Central Park", "Union Station", "the office", "Times Square",
                        "the Golden Gate Bridge", "Heathrow Airport", "the train station", "Pike Place Market",
                        "the city library", "Stanford University", "the nearest Costco", "Fisherman's Wharf",
                        "the stadium"],
        "place_type": ["gas station", "parking lot", "pharmacy", "coffee shop", "supermarket", "hospital",
                       "charging station", "pizza place", "bus stop", "bakery", "car wash", "bank"],
        "name": ["Mom", "Dad", "Sarah", "Tom", "Emily", "David", "Jessica", "Mike", "Grandma", "Alex", "Olivia",
                 "Dr. Patel"],
        "content": ["I'm running late", "I'll see you at 7", "dinner is ready", "I'm downstairs",
                    "the meeting moved to 3 pm", "I'm running late, sorry", "I'll pick you up", "I'm on my way",
                    "the keys are under the mat", "I landed safely", "we're out of milk", "I'll be home by 8"],
        "room": ["living room", "bedroom", "kitchen", "study", "bathroom", "kids' room", "hallway", "dining room",
                 "garage", "guest room"],
        "degrees": [str(d) for d in range(18, 31)],
        "title": ["team meeting", "dentist appointment", "yoga class", "lunch with Anna", "project review",
                  "school pickup", "rent payment", "parent-teacher meeting", "job interview", "car service"],
        "when": ["tomorrow at 3 pm", "Friday at 10 am", "tonight at 8", "next Monday at 9 am", "March 8 at 2 pm",
                 "Wednesday at 7 pm", "tomorrow morning at 9:30", "Sunday at noon"],
        "date": ["today", "tomorrow", "Friday", "next Monday", "this weekend", "March 8", "Wednesday", "next Tuesday",
                 "the end of the month", "Thursday"],
        "order_id": [],
        "product": ["headphones", "blender", "running shoes", "winter jacket", "keyboard", "coffee maker", "desk lamp",
                    "phone case", "suitcase", "air fryer", "robot vacuum", "dress"],
    },
}
# fmt: on


@dataclass(frozen=True)
class IntentTemplates:
    """How people ask for one intent: full sentences, and short commands that can be chained in multi-intent asks."""

    args: tuple[str, ...]  # slot names, in the order of the catalog parameters
    zh: tuple[str, ...]
    en: tuple[str, ...]
    zh_cmd: tuple[str, ...]
    en_cmd: tuple[str, ...]


def _t(args: tuple[str, ...], zh: list[str], en: list[str], zh_cmd: list[str], en_cmd: list[str]) -> IntentTemplates:
    return IntentTemplates(args, tuple(zh), tuple(en), tuple(zh_cmd), tuple(en_cmd))


# fmt: off
TEMPLATES: dict[str, IntentTemplates] = {
    "play_music": _t(
        ("artist",),
        ["[我想听|来点|放点|我要听]{artist}的[歌|音乐]", "[给我|帮我]放[一首|个|几首]{artist}的[歌|音乐][吧|]",
         "[播放|放一下]{artist}[的歌曲|的专辑|的歌]", "[有点无聊，|开车有点困，|心情不太好，]来首{artist}的歌",
         "[小助手，|嘿，|]我想听听{artist}", "随便放点{artist}的[吧|就行]"],
        ["[Play|Put on] [some|a song by|something by|a few songs by] {artist}[| please]",
         "[I want to|I'd like to|Can I] listen to {artist}", "Can you play [some |music by ]{artist}[?|]",
         "[Hey, |]let's listen to {artist}", "Start playing {artist}[| for me]",
         "[I'm bored, |Feeling sleepy, |]put on {artist}"],
        ["放{artist}的歌", "播放{artist}的音乐", "来点{artist}的歌"],
        ["play some {artist}", "put on {artist}", "play something by {artist}"],
    ),
    "music_pause": _t(
        (),
        ["[先|]暂停[一下|][音乐|歌曲|播放][吧|]", "[等一下|稍等|有人敲门|我接个电话]，[先|]把[歌|音乐]暂停[一下|]",
         "[歌|音乐]先停一下，[待会|一会儿]再听", "暂停播放[，谢谢|]", "按一下暂停[吧|]", "把这首歌[先|]暂停[一下|]"],
        ["Pause [the music|the song|playback|this track][| please| for a second]",
         "[Hold on|Wait|Someone's at the door|I need to take a call], pause [the music|the song|it]",
         "Can you pause [the music|this song|it][ for a moment|]?", "Hit pause[ please|]",
         "Pause it, I'll be right back", "[Freeze|Hold] the [music|song][ for a sec|]", "Put [the music|the song|it] on pause", "Pause [it|this] [for now|real quick]"],
        ["暂停音乐", "把歌暂停一下", "暂停一下音乐"],
        ["pause the music", "pause the song", "pause playback"],
    ),
    "music_resume": _t(
        (),
        ["[继续|接着]播放[吧|]", "[继续|接着]放[刚才的|那首|][歌|音乐][吧|]",
         "[好了，|我回来了，|电话打完了，]继续[放歌|播放音乐|放刚才那首]", "取消暂停[吧|]",
         "把[刚才暂停的|]歌继续放[一下|起来]", "接着刚才的地方[放|播][吧|]", "[可以|]继续[听歌|放音乐]了", "恢复播放[音乐|][吧|]"],
        ["Resume [the music|playback|the song|my music][| please]",
         "[Okay, |I'm back, |]continue [playing|the music|the song]", "Unpause [the music|it|the song][| please]",
         "Keep playing [the song|the music|from where it stopped]", "Can you resume [the music|what was playing][?|]",
         "Pick up [the song|the music] where it [stopped|left off]", "[Go on|Carry on] [playing|with the song|with the music]", "Start the music again[| please]", "Play [it|the song] again from where [I|we] paused"],
        ["继续放歌", "接着播放音乐", "继续播放"],
        ["resume the music", "continue playing", "unpause the song"],
    ),
    "music_next": _t(
        (),
        ["[下一首|换一首|切歌][吧|]", "这首[不好听|听腻了|太吵了|不喜欢]，[换下一首|切到下一首|来下一首|换一首]",
         "[帮我|]跳过这首[歌|]", "播放下一首[歌|]", "切到下一首[歌曲|歌|]", "[换首歌|换一首歌]听听", "[来|放]下一首[吧|]", "[换|切]一首[别的|其他的][歌|][吧|]", "[不想听这首|这首听过了]，下一首"],
        ["[Next song|Skip this song|Skip this track|Next track][| please]",
         "[I don't like this one|This song is boring|Not this one], [skip it|next song|play the next one]",
         "Play the next [song|track|one]", "Can you skip [to the next song|this one|ahead][?|]",
         "Go to the next [song|track]", "Skip [ahead|forward] [a song|one track]", "[Change|Switch] the song[| please]", "Play something else[| please]", "[Move|Jump] on to the next [song|track]", "Next one[ please|]"],
        ["切到下一首", "换一首歌", "跳过这首"],
        ["skip this song", "play the next track", "go to the next song"],
    ),
    "music_exit": _t(
        (),
        ["[我|]不想听了，把[歌|音乐]关了[吧|]", "[关掉|关闭|停止播放|退出]音乐[吧|]",
         "[别放了|不听了]，[关了吧|退出播放器|把音乐关掉]", "退出[音乐播放器|播放器]",
         "把音乐[停掉|关掉][，我要睡觉了|，要开会了|]", "不要再放歌了", "[音乐|歌]不用放了[，关掉吧|]", "[把|]播放器关[了|掉]", "[结束|停止]播放音乐", "[可以|]把音乐关了[吗|]", "[歌听够了|今天听够了]，关掉吧", "音乐[关掉|停掉]，[谢谢|我要休息了]"],
        ["Stop the music[| please|, I'm done]", "[Turn off|Shut off|Kill] the music",
         "[Close|Exit|Quit] the music player", "I'm done listening, [stop|turn off] the music",
         "No more music[ please|, thanks|]", "Stop playing [music|songs][ now|]", "[Turn|Switch] the music off[| please| now]", "[I've heard enough|That's enough music|Enough], [stop|turn it off]", "End the music[ please|]", "[Can you|Could you] [stop|turn off] the music[?|]", "[Shut|Close] the player[| please]", "I don't want music anymore[, turn it off|]", "Music off[| please]", "[Stop|End] playback and close the player"],
        ["把音乐关了", "退出音乐播放器", "关掉音乐"],
        ["turn off the music", "stop the music", "close the music player"],
    ),
    "music_query_player": _t(
        ("song",),
        ["[想知道|请问|你知道]{song}是谁唱的[？|]", "{song}[这首歌|]的[原唱|歌手|演唱者]是谁[？|]",
         "[帮我查一下|查查]{song}是谁唱的", "{song}是哪个歌手唱的[？|]", "谁唱的{song}[？|]",
         "[刚才那首|]{song}的歌手叫什么"],
        ["Who sings {song}[?|]", "Who [sang|performed|recorded] {song}[?|]",
         "[Do you know|Can you tell me] who sings {song}[?|]", "Which artist sings {song}[?|]",
         "{song}[, who sings that|: who's the singer][?|]", "Find out who sang {song}", "What band [plays|did] {song}[?|]"],
        ["查一下{song}是谁唱的", "告诉我{song}的原唱是谁"],
        ["tell me who sings {song}", "find out who sang {song}"],
    ),
    "volume_up": _t(
        (),
        ["[声音|音量]太小了，[大声一点|调大一点|开大点][吧|]", "[把|]音量[调高|调大|开大][一点|一些|点][吧|]",
         "[听不清|听不见]，[声音|音量]大一点", "[再|]大声[一点|点][，谢谢|]", "[小助手，|]音量加大",
         "[声音|音量]调到大一点", "增大音量"],
        ["Turn [it|the volume|the sound] up[| a bit| a little| please]", "[Louder|A bit louder|Make it louder][| please]",
         "[I can't hear it|It's too quiet|It's too soft], turn [it|the volume] up", "Increase the volume[| a bit| please]",
         "Raise the volume[| a little]", "Can you [turn up the volume|make it louder][?|]", "Volume up[| please]", "[Pump|Crank] [it|the volume] up[| a bit]", "[More|Higher] volume[ please|]", "[Boost|Bump up] the volume[| a little| please]", "Turn up the [volume|sound|music][| a bit| please]"],
        ["把音量调大一点", "声音开大点", "大声一点"],
        ["turn the volume up", "make it louder", "turn it up a bit"],
    ),
    "volume_down": _t(
        (),
        ["太吵了，把[声音|音量][开小|调小|关小][一点|点][吧|]", "[把|]音量[调低|调小|降低][一点|一些|点][吧|]",
         "[声音|音量]太大了[，小声点|，调小一点|]", "[小声|轻]一点[，孩子在睡觉|，邻居有意见|]", "[小助手，|]音量减小",
         "[降低|减小]音量"],
        ["Turn [it|the volume|the sound] down[| a bit| a little| please]",
         "[Quieter|A bit quieter|Make it quieter|Softer][| please]",
         "[It's too loud|That's way too loud|The baby is sleeping], turn [it|the volume] down",
         "[Lower|Decrease|Reduce] the volume[| a bit| please]", "Can you [turn down the volume|make it quieter][?|]",
         "Volume down[| please]", "Turn down the [volume|sound|music][| a bit| please]", "[Bring|Keep] the volume down[| a bit| please]", "[Less|Lower] volume[ please|]"],
        ["把声音调小一点", "音量降低一些", "小声一点"],
        ["turn the volume down", "make it quieter", "turn it down a little"],
    ),
    "volume_mute": _t(
        (),
        ["静音[吧|一下|]", "[把|]声音[全|]关掉[吧|]", "[先|]静音[，我接个电话|，开会了|，别出声]",
         "[开启|打开]静音[模式|]", "[别出声了|不要有声音]，静音", "把音量调到[零|0]", "[小助手，|]开静音模式", "[别吵了|安静一下]，[把声音关了|静音吧]", "[关闭|关掉]声音[吧|]", "[不要|别]发出声音了", "[帮我|]把[手机|音箱|设备]静音", "[会议开始了|孩子睡了]，[静音|把声音关了]"],
        ["Mute[| it| the speaker| the sound][| please]", "[Turn off|Kill|Cut] the sound[| completely| please]",
         "[Go|Switch to] silent[ mode|]", "[I'm on a call|Meeting starting], mute [it|the speaker]",
         "Set the volume to [zero|0]", "Silence[ the speaker| everything]", "Turn the sound off[| please| completely]", "Mute [everything|all sounds|the volume][ please|]", "[Shh|Quiet please], mute it", "Put [the speaker|the phone|it] on mute", "[Switch|Turn] on mute[| please]"],
        ["静音", "把声音关掉", "打开静音模式"],
        ["mute the speaker", "go silent", "turn off the sound"],
    ),
    "weather_search": _t(
        ("city",),
        ["[我想去|下周要去|打算去]{city}[玩|出差|旅游]，[帮我|]查[下|一下]天气[预报|]",
         "{city}[今天|明天|这周末|]的天气怎么样[？|]", "[查一下|看看|帮我查查]{city}的天气[预报|]",
         "{city}[明天|今天|]会下雨吗[？|]", "{city}现在[多少度|冷不冷|热不热][？|]", "[请问|]{city}[天气|气温]如何"],
        ["What's the weather [like |][in|for] {city}[?| today?| tomorrow?| this weekend?]",
         "[Check|Show me|Get] the [weather|forecast] [in|for] {city}", "Is it going to rain in {city}[ today| tomorrow|][?|]",
         "How [hot|cold|warm] is it in {city}[ right now|][?|]",
         "I'm [going to|flying to|heading to] {city}[ next week| tomorrow|], what's the weather like[?|]",
         "Weather [in|for] {city}[ please|]"],
        ["查一下{city}的天气", "看看{city}明天的天气预报", "帮我查{city}的天气"],
        ["check the weather in {city}", "tell me the forecast for {city}", "look up the weather in {city}"],
    ),
    "set_alarm": _t(
        ("time",),
        ["[帮我|给我|]定[一个|个]{time}的闹钟", "{time}叫我起床[吧|]", "[设个|设置一个]闹钟，{time}[响|]",
         "闹钟定在{time}[吧|]", "[我要|]{time}起床，[帮我|]定个闹钟", "{time}的时候把我叫醒"],
        ["Set an alarm for {time}", "Wake me up at {time}[| please| tomorrow]",
         "[Can you |Please |]set [my|an] alarm [for|at] {time}", "I need to get up at {time}[, set an alarm|]",
         "Alarm at {time}[ please|]", "Set the alarm to {time}"],
        ["定个{time}的闹钟", "{time}叫我起床", "设置一个{time}的闹钟"],
        ["set an alarm for {time}", "wake me up at {time}", "set my alarm for {time}"],
    ),
    "cancel_alarm": _t(
        ("time",),
        ["[把|帮我把]{time}的闹钟[取消|关掉|删掉][吧|]", "取消{time}的闹钟", "{time}的闹钟不用[了|响了]",
         "[明天不上班，|周末不用早起，|]把{time}那个闹钟去掉", "删除{time}的闹钟"],
        ["Cancel [my|the] {time} alarm", "Cancel the alarm [for|at] {time}",
         "[Turn off|Delete|Remove] [my|the] alarm [for|at] {time}",
         "I don't need the {time} alarm[ anymore| tomorrow|]", "[No work tomorrow, |]cancel the {time} alarm"],
        ["取消{time}的闹钟", "把{time}的闹钟关掉"],
        ["cancel my {time} alarm", "delete the alarm for {time}"],
    ),
    "set_timer": _t(
        ("duration",),
        ["[帮我|]倒计时{duration}", "[设|定][一个|个]{duration}的[计时器|倒计时]", "{duration}后提醒我[关火|出门|收衣服|]",
         "[煮鸡蛋|泡面|敷面膜]，[帮我|]计时{duration}", "计时{duration}[开始|]"],
        ["Set a timer for {duration}", "Remind me in {duration}", "Timer for {duration}[ please|]",
         "Count down {duration}[ for the pasta| for the eggs|]",
         "[I'm boiling eggs|The pasta is on], set a timer for {duration}", "Can you time {duration} for me[?|]"],
        ["倒计时{duration}", "设个{duration}的计时器"],
        ["set a timer for {duration}", "start a countdown of {duration}"],
    ),
    "navigate_to": _t(
        ("destination",),
        ["导航[去|到]{destination}", "[带我|我要|送我]去{destination}", "去{destination}怎么走", "怎么去{destination}[？|]",
         "[帮我|]规划[一下|]去{destination}的路线", "[开始导航，|]目的地{destination}",
         "[我要去|送我去]{destination}，[开导航|导航一下]"],
        ["[Navigate|Take me|Drive me|Get me] to {destination}", "How do I get to {destination}[?|]",
         "[Start navigation|Directions] to {destination}", "Show me the [way|route] to {destination}",
         "I need to go to {destination}[, start navigation|]"],
        ["导航去{destination}", "带我去{destination}"],
        ["navigate to {destination}", "take me to {destination}"],
    ),
    "find_nearby": _t(
        ("place_type",),
        ["附近有{place_type}吗[？|]", "[帮我|]找[一下|一个|个][附近的|最近的]{place_type}",
         "最近的{place_type}在哪[里|儿][？|]", "周边有什么{place_type}", "搜一下附近的{place_type}",
         "这附近哪里有{place_type}[？|]"],
        ["Find the nearest {place_type}", "Where's the closest {place_type}[?|]", "Is there a {place_type} [nearby|around here][?|]",
         "I'm looking for a {place_type}[ near me| around here]", "Find me a {place_type} close by",
         "Search for a {place_type} nearby"],
        ["找一下附近的{place_type}", "看看附近有没有{place_type}"],
        ["find the nearest {place_type}", "look for a {place_type} nearby"],
    ),
    "call_contact": _t(
        ("name",),
        ["给{name}打[个|一个|]电话", "[打电话给|呼叫]{name}", "[帮我|]打给{name}", "[我要|我想|]给{name}打电话",
         "拨通{name}的电话", "[帮我|]联系一下{name}，打个电话"],
        ["Call {name}[| please]", "[Give|Ring] {name} a call", "[Phone|Dial] {name}[ please|]",
         "I need to call {name}[ right now|]", "Can you call {name}[ for me|][?|]", "Get {name} on the phone"],
        ["给{name}打个电话", "打电话给{name}"],
        ["call {name}", "give {name} a call"],
    ),
    "send_message": _t(
        ("name", "content"),
        ["给{name}发[个|条|]短信[说|，说]{content}", "[帮我|]发消息给{name}：{content}", "告诉{name}{content}",
         "[发短信|发条信息]给{name}，内容是{content}", "跟{name}说一声{content}"],
        ["Text {name} that {content}", "Send [a message|a text] to {name} saying {content}", "Tell {name} {content}",
         "Message {name}: {content}", "Send {name} a text: {content}"],
        ["给{name}发短信说{content}", "告诉{name}{content}"],
        ["text {name} that {content}", "tell {name} {content}"],
    ),
    "turn_on_light": _t(
        ("room",),
        ["[把|帮我把]{room}的灯[打开|开一下|开开][吧|]", "[打开|开一下]{room}的灯", "{room}[太暗了|黑乎乎的|看不清]，[开灯|把灯打开]",
         "开{room}灯", "{room}开[个|下]灯"],
        ["Turn on the {room} light[s|]", "Switch on the light[s|] in the {room}", "[Lights on|Light on] in the {room}[ please|]",
         "It's [too dark|pitch black] in the {room}, turn on the light[s|]", "Can you turn the {room} light[s|] on[?|]"],
        ["打开{room}的灯", "把{room}的灯开开"],
        ["turn on the {room} lights", "switch on the light in the {room}"],
    ),
    "turn_off_light": _t(
        ("room",),
        ["[把|帮我把]{room}的灯[关掉|关上|关了][吧|]", "[关掉|关闭|关一下]{room}的灯", "[我要睡了，|没人了，|]{room}的灯关了吧",
         "{room}关灯", "{room}的灯别开着了"],
        ["Turn off the {room} light[s|]", "Switch off the light[s|] in the {room}", "Lights off in the {room}[ please|]",
         "[Nobody's in there, |I'm going to bed, |]turn off the {room} light[s|]",
         "Can you turn the {room} light[s|] off[?|]", "Kill the lights in the {room}"],
        ["关掉{room}的灯", "把{room}的灯关了"],
        ["turn off the {room} lights", "switch off the light in the {room}"],
    ),
    "set_temperature": _t(
        ("room", "degrees"),
        ["把{room}[的|][空调|温度][调到|设到|设成]{degrees}度", "{room}空调{degrees}度",
         "{room}有点[热|冷]，[温度|空调]调到{degrees}度", "[帮我|]把{room}温度设置为{degrees}度"],
        ["Set the {room} to {degrees} degrees", "Set the {room} [temperature|thermostat|AC] to {degrees}[ degrees|]",
         "It's [hot|chilly] in the {room}, [set|turn] it to {degrees} degrees", "{degrees} degrees in the {room}[ please|]",
         "Can you set the {room} AC to {degrees}[?|]"],
        ["把{room}空调调到{degrees}度", "{room}温度设成{degrees}度"],
        ["set the {room} to {degrees} degrees", "turn the {room} AC to {degrees}"],
    ),
    "create_event": _t(
        ("title", "when"),
        ["{when}提醒我{title}", "[帮我|]在日程里[加|添加]一个{title}，[时间是|]{when}",
         "{when}[要|有个]{title}，[记到日历上|帮我记一下|加到日程]", "[新建|创建]日程：{when}{title}",
         "把{title}安排在{when}"],
        ["Add {title} to my calendar for {when}", "Schedule {title} for {when}", "Put {title} on my calendar for {when}",
         "Remind me about {title} {when}", "Create an event: {title}, {when}"],
        ["把{title}加到{when}的日程", "{when}提醒我{title}"],
        ["add {title} to my calendar for {when}", "schedule {title} for {when}"],
    ),
    "query_schedule": _t(
        ("date",),
        ["我{date}有什么安排[？|]", "[查一下|看看|帮我看下]{date}的日程", "{date}[忙不忙|有空吗|有会吗][？|]",
         "{date}的[行程|日程|安排]是什么", "{date}我要做什么[来着|]"],
        ["What's on my [calendar|schedule] for {date}[?|]", "Show me my calendar for {date}", "Am I free {date}[?|]",
         "Do I have anything [planned|scheduled] for {date}[?|]", "Read me my agenda for {date}"],
        ["看看我{date}的日程", "查一下{date}有什么安排"],
        ["check my calendar for {date}", "tell me what I have on {date}"],
    ),
    "track_order": _t(
        ("order_id",),
        ["[帮我|]查[一下|]订单{order_id}[的物流|到哪了|的快递]", "我的订单{order_id}[到哪了|什么时候到|发货了吗][？|]",
         "订单号{order_id}，[查下物流|看看到哪了|什么时候能送到]", "{order_id}这个订单[怎么还没到|到哪儿了]"],
        ["Where is my order {order_id}[?|]", "Track order {order_id}",
         "[Check|Look up] the [status|delivery status|shipping status] of order {order_id}",
         "When will order {order_id} arrive[?|]", "Has order {order_id} shipped[ yet|][?|]",
         "What's happening with my order {order_id}[?|]"],
        ["查一下订单{order_id}的物流", "看看订单{order_id}到哪了"],
        ["track order {order_id}", "check where order {order_id} is"],
    ),
    "return_item": _t(
        ("product",),
        ["我收到的{product}有[瑕疵|问题|质量问题]，我想[要|]退货", "我要退[掉|]{product}", "[帮我|]申请{product}的退货",
         "{product}[尺码不合适|不喜欢|坏了|和描述不符]，[怎么退货|想退掉|申请退货]", "[买的|刚买的]{product}能退吗[？|]"],
        ["I want to return the {product}", "[Start|Open] a return for the {product}",
         "The {product} [arrived broken|doesn't fit|stopped working|isn't what I ordered], [I want to|I'd like to] return it",
         "[Can I|How do I] return [the|my] {product}[?|]", "Return the {product}[ please|]",
         "I'd like a refund for the {product}"],
        ["把{product}退掉", "申请{product}退货"],
        ["return the {product}", "start a return for the {product}"],
    ),
}
# fmt: on

# fmt: off
# Multi-turn asks (seed 002: the turns are joined into one instruction, the label is the final call).
MULTI_TURN: dict[str, dict[str, list[tuple[str, str]]]] = {
    "play_music": {"zh": [("我想听音乐。", "给我放个{artist}的音乐吧。"), ("[来点|放点]歌。", "要{artist}的。")],
                   "en": [("I want to listen to some music.", "Play something by {artist}."),
                          ("Put on some music.", "[Let's go with|How about] {artist}.")]},
    "weather_search": {"zh": [("帮我查[个|一下]天气。", "{city}的。"), ("明天天气怎么样？", "我说的是{city}。")],
                       "en": [("Check the weather for me.", "In {city}."),
                              ("What's the weather tomorrow?", "I mean in {city}.")]},
    "set_alarm": {"zh": [("帮我定个闹钟。", "{time}的。")], "en": [("Set an alarm.", "For {time}.")]},
    "navigate_to": {"zh": [("打开导航。", "去{destination}。")], "en": [("Start navigation.", "Go to {destination}.")]},
    "call_contact": {"zh": [("我想打个电话。", "打给{name}。")], "en": [("I need to make a call.", "Call {name}.")]},
    "turn_on_light": {"zh": [("帮我开个灯。", "{room}的。")], "en": [("Turn on a light.", "The one in the {room}.")]},
    "set_timer": {"zh": [("帮我计个时。", "{duration}。")], "en": [("Set a timer.", "Make it {duration}.")]},
    "track_order": {"zh": [("帮我查个快递。", "订单号是{order_id}。")],
                    "en": [("Where's my package?", "The order number is {order_id}.")]},
}
# fmt: on

JOINERS: dict[str, list[str]] = {
    "zh": ["{a}，然后{b}", "先{a}，再{b}", "{a}，顺便{b}", "{a}，另外{b}", "{a}，还有{b}"],
    "en": ["{a}, then {b}", "{a} and {b}", "First {a}, then {b}", "{a}, and also {b}", "Please {a} and {b}"],
}
# Same-domain pairs are not combined; these cross-domain ones contradict each other.
AUDIO_STOPPERS = {"music_exit", "music_pause", "volume_mute"}

# fmt: off
# Wrong machine pre-labels a reviewer would fix: a confusable intent with the same arguments.
CONFUSABLE = {
    "volume_up": "volume_down", "volume_down": "volume_up", "volume_mute": "music_pause", "music_pause": "music_exit",
    "music_exit": "music_pause", "music_resume": "music_next", "music_next": "music_resume",
    "turn_on_light": "turn_off_light", "turn_off_light": "turn_on_light", "set_alarm": "cancel_alarm",
    "cancel_alarm": "set_alarm", "set_timer": "set_alarm", "navigate_to": "find_nearby", "find_nearby": "navigate_to",
    "play_music": "music_query_player", "music_query_player": "play_music", "weather_search": "navigate_to",
    "call_contact": "query_schedule", "track_order": "return_item", "return_item": "track_order",
}
# fmt: on

# fmt: off
ABANDONED: list[tuple[str, str, str]] = [  # (utterance, machine guess, reviewer's remark)
    ("嗯嗯", "music_resume()", "无意义输入"), ("喂？喂？", "call_contact()", "无意义输入"),
    ("那个……算了", "music_exit()", "语句不完整"), ("今天股票行情怎么样", "weather_search(今天)", "意图不在列表中"),
    ("帮我订一张去北京的机票", "navigate_to(北京)", "意图不在列表中"), ("讲个笑话吧", "play_music()", "意图不在列表中"),
    ("你是男的还是女的", "query_schedule()", "意图不在列表中"), ("啊啊啊啊啊", "volume_up()", "无意义输入"),
    ("帮我写一首关于秋天的诗", "play_music(秋天)", "意图不在列表中"), ("我刚才说到哪了", "music_resume()", "语句不完整"),
    ("把那个", "turn_on_light()", "语句不完整"), ("asdfghjkl", "music_next()", "无意义输入"),
    ("hmm", "volume_down()", "无意义输入"), ("never mind", "music_exit()", "无意义输入"),
    ("book me a flight to Denver", "navigate_to(Denver)", "意图不在列表中"),
    ("how much is bitcoin right now", "weather_search(bitcoin)", "意图不在列表中"),
    ("tell me a joke", "play_music()", "意图不在列表中"), ("sing me a song", "play_music()", "意图不在列表中"),
    ("can you uh", "call_contact()", "语句不完整"), ("what is the meaning of life", "query_schedule(life)", "意图不在列表中"),
]
# fmt: on

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")
_NORMALISE = re.compile(r"[\W_]+")
_HAN = re.compile("[\u3400-\u9fff\uf900-\ufaff]")


def normalise_text(text: str) -> str:
    """Compare texts ignoring case, spaces and punctuation, so near-duplicates count as duplicates."""
    return _NORMALISE.sub("", text.lower())


def _order_ids(rng: random.Random) -> None:
    SLOTS["zh"]["order_id"] = [str(rng.randrange(10**11, 10**12)) for _ in range(16)]
    SLOTS["en"]["order_id"] = [
        f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randrange(10**5, 10**6)}"
        for _ in range(16)
    ]


def expand(template: str, lang: str, slots: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """Every (text, slot values) a template can produce, in a stable order."""
    pieces = _GROUP.split(template)  # literal, alternatives, literal, ...
    choices = [[p] if i % 2 == 0 else p.split("|") for i, p in enumerate(pieces)]
    used = _SLOT.findall(template)
    unknown = set(used) - set(SLOTS[lang])
    if unknown or set(used) != set(slots):
        raise ValueError(f"template {template!r} ({lang}) uses slots {used}, expected {list(slots)}")
    values = [SLOTS[lang][name] for name in slots]
    out = []
    for parts in itertools.product(*choices):
        skeleton = "".join(parts)
        for combo in itertools.product(*values):
            filled = dict(zip(slots, combo, strict=True))
            text = _SLOT.sub(lambda m, f=filled: f[m.group(1)], skeleton)
            out.append((re.sub(r"\s+", " ", text).strip(), combo))
    return out


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


class Pool:
    """Unused phrasings of one intent in one language, drawn template by template so phrasing stays varied."""

    def __init__(
        self, name: str, templates: tuple[str, ...], lang: str, slots: tuple[str, ...], rng: random.Random
    ) -> None:
        self.name = f"{name} ({lang})"
        self.queues = []
        for template in templates:
            expansions = expand(template, lang, slots)
            rng.shuffle(expansions)
            self.queues.append(expansions)
        self.rng = rng

    def draw(self, taken: set[str]) -> tuple[str, tuple[str, ...]]:
        order = list(range(len(self.queues)))
        self.rng.shuffle(order)
        for index in order:
            queue = self.queues[index]
            while queue:
                text, values = queue.pop()
                if normalise_text(text) not in taken:
                    taken.add(normalise_text(text))
                    return text, values
        raise ValueError(f"{self.name}: templates exhausted, add phrasings or slot values")


@dataclass
class Item:
    """One manifest line to be: a labelled utterance, an abandoned one, or a deliberately broken one."""

    text: str | None
    output: str | None  # the reviewed label (None: none given)
    system_output: str | None
    abandoned: str | None = None  # abandonRemark
    broken: str = ""  # how the line is broken, "" when it is not
    full_width: bool = False


def build_items(catalog: Catalog, rng: random.Random) -> list[Item]:
    """All manifest items in line order: records first drawn per intent and language, then shuffled."""
    _order_ids(rng)
    taken: set[str] = set()
    for text, _, _ in ABANDONED:
        taken.add(normalise_text(text))
    items: list[Item] = []
    pools: dict[tuple[str, str], Pool] = {}
    for intent in catalog.names:
        spec = TEMPLATES[intent]
        for lang in ("zh", "en"):
            templates = (spec.zh + spec.zh_cmd) if lang == "zh" else (spec.en + spec.en_cmd)
            pools[intent, lang] = Pool(intent, templates, lang, spec.args, rng)
            for _ in range(SINGLE_PER_LANG):
                text, values = pools[intent, lang].draw(taken)
                text = _capitalise(text) if lang == "en" else text
                output = render_calls([Call(intent, values)])
                items.append(Item(text, output, output))
    for intent, by_lang in MULTI_TURN.items():
        spec = TEMPLATES[intent]
        for lang, pairs in by_lang.items():
            joined = [f"{a}{b}" if lang == "zh" else f"{a} {b}" for a, b in pairs]
            pool = Pool(f"{intent} multi-turn", tuple(joined), lang, spec.args, rng)
            for _ in range(MULTI_TURN_PER_LANG):
                text, values = pool.draw(taken)
                output = render_calls([Call(intent, values)])
                items.append(Item(text, output, output))
    domain = {intent.name: intent.domain for intent in catalog.intents}
    pairs = [
        (a, b)
        for a in catalog.names
        for b in catalog.names
        if domain[a] != domain[b] and not ({a, b} & AUDIO_STOPPERS and {domain[a], domain[b]} <= {"music", "volume"})
    ]
    commands = {
        (intent, lang): [
            expansion
            for template in getattr(TEMPLATES[intent], f"{lang}_cmd")
            for expansion in expand(template, lang, TEMPLATES[intent].args)
        ]
        for intent in catalog.names
        for lang in ("zh", "en")
    }
    for index in range(MULTI_INTENT_RECORDS):
        lang = "zh" if index % 2 == 0 else "en"
        first, second = rng.choice(pairs)
        for _attempt in range(20):
            joiner = rng.choice(JOINERS[lang])
            a_text, a_values = rng.choice(commands[first, lang])
            b_text, b_values = rng.choice(commands[second, lang])
            text = joiner.format(a=a_text, b=b_text)
            text = _capitalise(text) if lang == "en" else text
            if normalise_text(text) not in taken:
                taken.add(normalise_text(text))
                break
        else:
            raise ValueError(f"no fresh multi-intent text for {first} + {second}")
        output = render_calls([Call(first, a_values), Call(second, b_values)])
        items.append(Item(text, output, output))

    _corrupt_prelabels(items, rng)
    for item in rng.sample(items, round(len(items) * FULL_WIDTH_SHARE)):
        item.full_width = '"' not in (item.output or "")
    for text, guess, remark in ABANDONED:
        items.append(Item(text, guess, guess, abandoned=remark))
    items.extend(_broken_items(pools, taken, rng))
    rng.shuffle(items)
    return items


def _corrupt_prelabels(items: list[Item], rng: random.Random) -> None:
    """Make the machine pre-label wrong on a share of items: the reviewed label keeps the truth."""
    for item in rng.sample(items, round(len(items) * WRONG_PRELABEL_SHARE)):
        calls = parse_calls(item.output or "")
        first = calls[0]
        mode = rng.random()
        if len(calls) > 1 and mode < 0.3:
            wrong = calls[:1]  # the machine missed the second intent
        elif first.name in CONFUSABLE and mode < 0.75:
            other = CONFUSABLE[first.name]
            wrong = [Call(other, first.args), *calls[1:]]
        elif first.args:
            wrong = [Call(first.name, ()), *calls[1:]]  # the machine missed the parameter
        else:
            wrong = [Call(CONFUSABLE.get(first.name, "volume_up"), ()), *calls[1:]]
        item.system_output = render_calls(wrong)


def _broken_items(pools: dict[tuple[str, str], Pool], taken: set[str], rng: random.Random) -> list[Item]:
    """A few lines that must be rejected, each for a reason the converter names."""

    def fresh(intent: str, lang: str) -> tuple[str, str]:
        text, values = pools[intent, lang].draw(taken)
        return (_capitalise(text) if lang == "en" else text), render_calls([Call(intent, values)])

    broken: list[Item] = []
    for intent, lang in (("weather_search", "zh"), ("play_music", "en"), ("set_alarm", "zh")):
        text, output = fresh(intent, lang)
        broken.append(Item(text, output, output, broken="not_json"))
    for _ in range(2):
        broken.append(Item(None, "volume_up()", "volume_up()", broken="missing_instruction"))
    text, _ = fresh("navigate_to", "zh")
    broken.append(Item(text, None, None, broken="no_labels"))
    text, _ = fresh("call_contact", "en")
    broken.append(Item(text, "", "", broken="empty_output"))
    text, output = fresh("music_query_player", "zh")
    broken.append(Item(text, None, output, broken="no_annotations"))
    text, output = fresh("play_music", "zh")
    broken.append(Item(text, output[:-1], output, broken="unparseable"))  # closing parenthesis dropped
    text, _ = fresh("music_exit", "zh")
    broken.append(Item(text, "关闭音乐", "music_exit()", broken="unparseable"))  # words, not a call
    text, output = fresh("weather_search", "en")
    broken.append(Item(text, output + ")", output, broken="unparseable"))
    text, output = fresh("set_alarm", "en")
    broken.append(Item(text, output.replace("(", " ").rstrip(")"), output, broken="unparseable"))
    return broken


class Clock:
    """Snowflake-like ids and label times that move forward like a labelling session."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = START
        self.next_id = 1952468131000000000

    def new_id(self) -> str:
        self.next_id += self.rng.randrange(10**6, 10**8)
        return str(self.next_id)

    def tick(self, low: int, high: int) -> datetime:
        self.now += timedelta(milliseconds=self.rng.randrange(low * 1000, high * 1000))
        return self.now


_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _mark_time(moment: datetime) -> str:
    """iTAG's Java-style timestamp, e.g. `Wed Jul 23 10:03:05 CST 2025` (locale-independent)."""
    return f"{_DAYS[moment.weekday()]} {_MONTHS[moment.month - 1]} {moment:%d %H:%M:%S} CST {moment.year}"


def _mark_result(output: str | None, annotations: bool = True) -> str:
    body = {
        "tabId": "CommonExtensions",
        "annotations": [{"id": None, "labels": {"output": output}, "exif": None}] if annotations else [],
        "type": "CommonExtensions",
        "version": "v2",
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _result(mark_id: str, output: str | None, moment: datetime, user_id: str | None, annotations: bool = True) -> dict:
    return {
        "MarkResultId": mark_id,
        "MarkTitle": MARK_TITLE,
        "MarkResult": _mark_result(output, annotations),
        "QuestionId": "CommonExtensions",
        "ResultType": "OPEN_GROUP",
        "Progress": None,
        "Version": str(int(moment.astimezone(UTC).timestamp() * 1000)),
        "MarkTime": _mark_time(moment),
        "UserMarkResultId": user_id,
        "IsNeedVoteJudge": False,
    }


def _full_width(output: str) -> str:
    return output.translate(str.maketrans({"(": "（", ")": "）", ",": "，", ";": "；"}))


def manifest_line(item: Item, clock: Clock) -> str:
    """One iTAG export line for an item, in the exact layout of seed 002."""
    data: dict[str, Any] = {"instruction": item.text, "_itag_index": ""}
    if item.broken == "missing_instruction":
        data = {"_itag_index": ""}
    line: dict[str, Any] = {"data": data}
    if item.broken != "no_labels":
        mark_id = clock.new_id()
        labelled = clock.tick(5, 40)
        line[f"label-{TASK_ID}-system"] = {
            "fixedFlag": 0,
            "results": [_result(mark_id, item.system_output, labelled, None)],
            "abandonFlag": 0,
        }
        reviewed_output = _full_width(item.output) if item.full_width and item.output else item.output
        changed = reviewed_output != item.system_output
        reviewed_at = clock.tick(20, 300) if changed else labelled
        line[f"label-{TASK_ID}"] = {
            "results": [_result(mark_id, reviewed_output, reviewed_at, clock.new_id(), item.broken != "no_annotations")]
        }
    line["abandonFlag"] = 1 if item.abandoned else 0
    line["abandonRemark"] = item.abandoned
    text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
    if item.broken == "not_json":
        text = text[: len(text) * 3 // 5]  # the export was cut off mid-line
    return text


def record_for(item: Item, number: int) -> dict[str, Any]:
    """The record the converter should produce for a labelled item (canonical output, first call's params)."""
    if item.text is None or item.output is None:
        raise ValueError(f"item {number} has no text or no label: {item}")
    calls = parse_calls(item.output)
    return {
        "id": f"assistant-{number:05d}",
        "text": item.text,
        "output": render_calls(calls),
        "intent": calls[0].name,
        "params": list(calls[0].args),
        "calls": [{"name": call.name, "args": list(call.args)} for call in calls],
        "lang": "zh" if _HAN.search(item.text) else "en",
        "source_line": None,
    }


def check_record(record: dict[str, Any], catalog: Catalog) -> None:
    """Guard the templates: known intents, right arity, values copied verbatim from the text."""
    for call in record["calls"]:
        intent = catalog.get(call["name"])
        if intent is None:
            raise ValueError(f"{record['id']}: unknown intent {call['name']!r}")
        if len(call["args"]) != len(intent.parameters):
            raise ValueError(f"{record['id']}: {call['name']} takes {len(intent.parameters)} arguments: {record}")
        missing = [arg for arg in call["args"] if arg not in record["text"]]
        if missing:
            raise ValueError(f"{record['id']}: values {missing} do not appear in {record['text']!r}")


def generate(out_dir: Path, catalog_path: Path = HERE / "catalog.yaml") -> dict[str, Any]:
    """Write records.jsonl and manifest.jsonl into out_dir; returns counts for the README."""
    catalog = load_catalog(catalog_path)
    missing = set(catalog.names) ^ set(TEMPLATES)
    if missing:
        raise ValueError(f"catalog and templates disagree on intents: {sorted(missing)}")
    rng = random.Random(SEED)
    items = build_items(catalog, rng)
    clock = Clock(rng)
    lines, records = [], []
    wrong_prelabels = 0
    for item in items:
        lines.append(manifest_line(item, clock))
        if item.abandoned is None and not item.broken:
            record = record_for(item, len(records) + 1)
            check_record(record, catalog)
            records.append(record)
            wrong_prelabels += item.system_output != item.output
    atomic_write_text(out_dir / "manifest.jsonl", "\n".join(lines) + "\n")
    write_jsonl(out_dir / "records.jsonl", records)
    per_intent = Counter((r["intent"], r["lang"]) for r in records)
    return {
        "manifest_lines": len(lines),
        "records": len(records),
        "abandoned": sum(item.abandoned is not None for item in items),
        "broken": len(lines) - len(records) - sum(item.abandoned is not None for item in items),
        "multi_intent": sum(len(r["calls"]) > 1 for r in records),
        "wrong_prelabels": wrong_prelabels,
        "per_intent": {name: {lang: per_intent[name, lang] for lang in ("zh", "en")} for name in catalog.names},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for records.jsonl and manifest.jsonl")
    args = parser.parse_args(argv)
    counts = generate(args.out)
    print(json.dumps({k: v for k, v in counts.items() if k != "per_intent"}))
    for name, langs in counts["per_intent"].items():
        print(f"{name:20s} zh {langs['zh']:3d}  en {langs['en']:3d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
